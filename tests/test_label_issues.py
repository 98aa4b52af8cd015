"""Unit tests for pipeline.steps.label_issues: grouped folds, out-of-fold probabilities, confident learning."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pipeline.steps.label_issues import ISSUE_COLUMNS, find_label_issues, fold_of, out_of_fold_probabilities


def _blobs(n: int = 600, k: int = 3, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs: features (n, 4) and their true labels 0..k-1."""
    gen = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = np.array([[6.0 * c, -6.0 * c, 3.0 * (c % 2), 0.0] for c in range(k)])
    return centres[y] + gen.normal(size=(n, 4)), y


def _flipped(y: np.ndarray, rate: float, k: int, *, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a `rate` of them moved to another class, and the mask of those moved."""
    gen = np.random.default_rng(seed)
    flip = np.zeros(len(y), dtype=bool)
    flip[gen.choice(len(y), int(rate * len(y)), replace=False)] = True
    noisy = y.copy()
    noisy[flip] = (y[flip] + gen.integers(1, k, flip.sum())) % k
    return noisy, flip


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True labels, noisy labels, the flipped mask and out-of-fold probabilities of 5% flipped blobs."""
    x, y = _blobs()
    noisy, flip = _flipped(y, 0.05, 3)
    return y, noisy, flip, out_of_fold_probabilities(x, noisy, np.arange(len(y)), seed=3)


def test_planted_flips_are_found(planted):
    """5% flips on separable blobs: nearly all are flagged and nearly nothing else is."""
    y, noisy, flip, probs = planted
    issues = find_label_issues(noisy, probs)
    hits = flip[issues["position"]].sum()
    assert hits / len(issues) >= 0.9 and hits / flip.sum() >= 0.9
    flagged = issues.set_index("position")
    assert (flagged.loc[np.flatnonzero(flip)[:5], "suggested_label"] == y[np.flatnonzero(flip)[:5]]).all()


def test_issue_table_is_ranked_by_self_confidence(planted):
    _, noisy, _, probs = planted
    issues = find_label_issues(noisy, probs)
    assert tuple(issues.columns) == ISSUE_COLUMNS
    assert issues["self_confidence"].is_monotonic_increasing
    assert np.allclose(issues["self_confidence"], probs[issues["position"], noisy[issues["position"]]])
    assert (issues["given_label"] == noisy[issues["position"]]).all()


def test_clean_data_gives_few_flags():
    x, y = _blobs()
    probs = out_of_fold_probabilities(x, y, np.arange(len(y)), seed=3)
    assert len(find_label_issues(y, probs)) <= 3


def test_class_names_label_the_columns():
    """String labels: columns follow np.unique, and the table speaks in class names."""
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05], [0.15, 0.85]])
    labels = np.array(["ham", "ham", "spam", "spam", "spam", "spam"])
    issues = find_label_issues(labels, probs, classes=["ham", "spam"])
    assert issues["position"].tolist() == [4]
    assert issues.iloc[0][["given_label", "suggested_label"]].tolist() == ["spam", "ham"]


def test_a_record_the_model_agrees_with_is_never_flagged():
    """Calibration scales row 0 of the confident joint, [4, 1], up to its 10 records: 2 errors
    estimated, but only record 4 has the model prefer the other class."""
    probs = np.array([[0.95, 0.05]] * 4 + [[0.1, 0.9]] + [[0.55, 0.45]] * 5 + [[0.2, 0.8]] * 4)
    labels = np.array([0] * 10 + [1] * 4)
    assert find_label_issues(labels, probs)["position"].tolist() == [4]


def test_a_group_never_straddles_folds():
    groups = [f"g{i // 4}" for i in range(200)]
    fold = fold_of(groups, 5, seed=11)
    per_group = pd.Series(fold).groupby(groups).nunique()
    assert (per_group == 1).all()
    assert set(fold) == set(range(5))  # 50 groups dealt round-robin: every fold has some


def test_folds_do_not_depend_on_record_order():
    groups = np.array([f"g{i % 37}" for i in range(300)])
    perm = np.random.default_rng(5).permutation(len(groups))
    assert np.array_equal(fold_of(groups, 4, seed=2)[perm], fold_of(groups[perm], 4, seed=2))
    assert not np.array_equal(fold_of(groups, 4, seed=2), fold_of(groups, 4, seed=3))


def test_records_are_predicted_by_models_that_never_saw_their_group():
    """Each group of 5 identical records has its own one-hot feature and a random label: a model
    that saw the group knows its label, one that did not can only guess."""
    gen = np.random.default_rng(4)
    groups = np.repeat(np.arange(40), 5)
    x = np.eye(40)[groups]
    labels = gen.integers(0, 2, 40)[groups]

    def accuracy(group_ids: np.ndarray) -> float:
        probs = out_of_fold_probabilities(x, labels, group_ids, folds=4, seed=1)
        return float((probs.argmax(axis=1) == labels).mean())

    assert accuracy(groups) <= 0.7
    assert accuracy(np.arange(len(labels))) == 1.0  # the same data with the group ignored leaks


def test_results_identical_when_rows_are_permuted():
    x, y = _blobs(300)
    noisy, _ = _flipped(y, 0.05, 3)
    groups = np.arange(len(y)) // 2
    perm = np.random.default_rng(9).permutation(len(y))
    probs = out_of_fold_probabilities(x, noisy, groups, seed=8)
    permuted = out_of_fold_probabilities(x[perm], noisy[perm], groups[perm], seed=8)
    assert probs[perm].tobytes() == permuted.tobytes()
    issues = find_label_issues(noisy, probs)
    moved = find_label_issues(noisy[perm], permuted)
    assert sorted(perm[moved["position"]]) == sorted(issues["position"])


def test_sparse_features_give_probabilities():
    x, y = _blobs(150)
    rows = np.abs(x) / np.linalg.norm(x, axis=1, keepdims=True)  # like TF-IDF: non-negative, unit rows
    probs = out_of_fold_probabilities(sp.csr_matrix(rows), y, np.arange(len(y)), seed=1)
    assert probs.shape == (150, 3) and np.allclose(probs.sum(axis=1), 1.0)


def test_a_class_missing_from_a_fold_still_gets_its_column():
    """Class 'c' lives in one group, so the model for that group's fold never saw it."""
    x, y = _blobs(90)
    labels = np.array(["a", "b", "c"])[y]
    groups = np.where(labels == "c", "only-c", np.arange(len(y)).astype(str))
    probs = out_of_fold_probabilities(x, labels, groups, folds=3, seed=0)
    assert probs.shape == (90, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs[labels == "c", 2] == 0).all()
    assert (probs[labels != "c", 2] > 0).any()


def test_a_training_part_of_one_class_predicts_that_class():
    """Class 'b' lives in one group: the model for its fold sees only 'a'."""
    x, _ = _blobs(40, 2)
    labels = np.array(["a"] * 30 + ["b"] * 10)
    groups = np.array([str(i) for i in range(30)] + ["only-b"] * 10)
    probs = out_of_fold_probabilities(x, labels, groups, folds=3, seed=0)
    assert (probs[labels == "b"] == [1.0, 0.0]).all()


def test_out_of_fold_validation_says_what_is_wrong():
    x, y = _blobs(30)
    with pytest.raises(ValueError, match="one row per record"):
        out_of_fold_probabilities(x, y[:-1], np.arange(30), seed=0)
    with pytest.raises(ValueError, match="one row per record"):
        out_of_fold_probabilities(x, y, np.arange(29), seed=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        out_of_fold_probabilities(x, np.zeros(30, dtype=int), np.arange(30), seed=0)
    with pytest.raises(ValueError, match="The 'folds' parameter .* must be an int >= 2. Got 1 instead"):
        out_of_fold_probabilities(x, y, np.arange(30), folds=1, seed=0)
    with pytest.raises(ValueError, match="distinct groups"):
        out_of_fold_probabilities(x, y, np.arange(30) % 3, folds=5, seed=0)
    with pytest.raises(ValueError, match="'folds' parameter of fold_of"):
        fold_of(["a", "b"], 0, seed=0)


def test_find_label_issues_validation_says_what_is_wrong():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    with pytest.raises(ValueError, match="one row per label"):
        find_label_issues([0, 1], probs)
    with pytest.raises(ValueError, match="at least 2 classes"):
        find_label_issues([0, 0, 0], np.ones((3, 1)))
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        find_label_issues([0, 1, 0], probs * 2)
    with pytest.raises(ValueError, match="'x' at position 2"):
        find_label_issues(["a", "b", "x"], probs, classes=["a", "b"])
    with pytest.raises(ValueError, match="each of the 2 probability columns"):
        find_label_issues([0, 1, 0], probs, classes=["a", "b", "c"])
