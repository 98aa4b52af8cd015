"""Evaluation scores: ROC-AUC for binary tasks, calibration error, and the baseline comparison."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.model.scores import (binary_roc_auc, classification_scores, compare_with_baselines,
                                   expected_calibration_error, macro_f1, macro_f1_difference_interval,
                                   probability_scores, reliability, softmax)


def test_roc_auc_binary_only():
    y = [0, 0, 1, 1]
    perfect = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert binary_roc_auc(y, perfect) == 1.0
    assert binary_roc_auc(y, perfect[::-1]) == 0.0
    assert binary_roc_auc([0, 0, 0, 0], perfect) is None  # one class only: undefined
    assert binary_roc_auc([0, 1, 2], np.eye(3)) is None  # not a binary task
    assert "roc_auc" not in probability_scores([0, 1, 2], np.eye(3), bins=10)


def test_roc_auc_is_rank_based_so_svm_margins_work():
    y = [0, 1, 0, 1]
    margins = np.array([[2.0, -2.0], [-0.5, 0.5], [0.1, -0.1], [-3.0, 3.0]])
    assert binary_roc_auc(y, margins) == binary_roc_auc(y, softmax(margins)) == 1.0


def test_ece_is_zero_when_confidence_matches_accuracy():
    # four records at confidence 0.75, three of them right: perfectly calibrated
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error([0, 0, 0, 1], probs, bins=10) == pytest.approx(0.0)


def test_ece_weights_each_bin_gap_by_its_share():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    y = [0, 1, 0, 0]  # bin 0.9-1.0: accuracy 0.5 at 0.95; bin 0.5-0.6: accuracy 1.0 at 0.55
    assert expected_calibration_error(y, probs, bins=10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    table = reliability(y, probs, bins=10)
    assert [(row["bin"], row["count"], row["accuracy"]) for row in table] == [(5, 2, 1.0), (9, 2, 0.5)]


def test_confidence_of_one_falls_in_the_last_bin():
    assert reliability([0], np.array([[1.0, 0.0]]), bins=4)[0]["bin"] == 3


def test_classification_scores_per_class_and_confusion():
    scores = classification_scores([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert scores["accuracy"] == 0.75
    assert scores["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(0.666667), "support": 2}
    assert scores["confusion_matrix"]["rows_true_cols_pred"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]


def test_comparison_says_which_baselines_the_model_did_not_beat():
    model = {"macro_f1": 0.97, "accuracy": 0.99}
    baselines = {"tfidf": {"macro_f1": 0.98, "accuracy": 0.99}, "random_init": {"macro_f1": 0.80, "accuracy": 0.9},
                 "linear_probe": {"macro_f1": 0.97, "accuracy": 0.98}}
    result = compare_with_baselines(model, baselines)
    assert result["not_beaten"] == ["tfidf"]
    assert {k: v["verdict"] for k, v in result["baselines"].items()} == {
        "linear_probe": "tie", "random_init": "better", "tfidf": "worse"}
    assert result["baselines"]["tfidf"]["model_minus_baseline_macro_f1"] == pytest.approx(-0.01)
    assert [k for k, v in result["baselines"].items() if v["beaten"]] == ["random_init"]  # a tie is not a win


def test_softmax_rows_sum_to_one_and_keep_order():
    probs = softmax(np.array([[1000.0, 0.0], [0.0, 1.0]]))
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0]) and probs.argmax(axis=1).tolist() == [0, 1]


def _interval(y, a, b, n_classes=2, seed=0, **options):
    return macro_f1_difference_interval(y, a, b, n_classes, generator=np.random.default_rng(seed), **options)


def test_bootstrap_scores_each_resample_as_macro_f1_does():
    from pipeline.model.scores import _macro_f1_rows

    generator = np.random.default_rng(3)
    y, pred = generator.integers(0, 3, size=(20, 15)), generator.integers(0, 3, size=(20, 15))
    y[0], pred[0] = 0, 1  # a class neither present nor predicted counts as 0, as in macro_f1
    expected = [macro_f1(row_y, row_p, 3) for row_y, row_p in zip(y, pred)]
    assert _macro_f1_rows(y, pred, 3) == pytest.approx(expected)


def test_equal_predictions_differ_by_exactly_nothing():
    y = [0, 1] * 50
    pred = [0, 0] * 50
    assert _interval(y, pred, pred) == [0.0, 0.0]


def test_a_clear_win_excludes_zero_and_one_record_does_not():
    y = np.array([0] * 450 + [1] * 55)
    model = y.copy()
    noisy = y.copy()
    noisy[:40] = 1  # 40 false positives
    low, high = _interval(y, model, noisy)
    assert 0 < low <= high
    one_off = y.copy()
    one_off[-1] = 0  # a single missed minority record
    low, high = _interval(y, one_off, y)
    assert low < 0 <= high  # a one-record loss on this split is within noise


def test_bootstrap_is_reproducible_and_bounded_in_memory():
    y = np.arange(30_000) % 2
    pred = y.copy()
    pred[:300] = 1 - pred[:300]
    first = _interval(y, pred, y, rounds=200, seed=7)
    assert first == _interval(y, pred, y, rounds=200, seed=7)
    assert -0.012 < first[0] <= first[1] < -0.008  # 300 errors in 30,000: about -0.01, clearly a loss
