"""Classical baselines: TF-IDF character n-grams + linear SVM, and the linear probe on features."""
from __future__ import annotations

import numpy as np

from pipeline.model.baselines import linear_probe, metadata_probe, tfidf_svm

SPAM = ["WIN a FREE prize now, call 0800", "Claim your FREE cash prize txt WIN", "URGENT! You have won a prize, call now",
        "FREE entry to win cash, reply WIN"]
HAM = ["see you at lunch tomorrow", "can you pick up milk on the way home", "running late, be there in ten",
       "thanks for dinner last night"]


def test_tfidf_separates_obvious_classes_and_is_deterministic():
    train, y = SPAM + HAM, np.array([1] * 4 + [0] * 4)
    test = ["WIN a FREE prize, call now", "see you at dinner tomorrow"]
    scores = tfidf_svm(train, y, test, n_classes=2, seed=0)
    assert scores.shape == (2, 2) and scores.argmax(axis=1).tolist() == [1, 0]
    assert np.allclose(scores.sum(axis=1), 1.0) and ((scores > 0) & (scores < 1)).all()
    assert np.array_equal(scores, tfidf_svm(train, y, test, n_classes=2, seed=0))


def test_tfidf_handles_three_classes_and_class_weights():
    train = ["refund my bill", "invoice charge wrong", "parcel not delivered", "shipping is late", "app crashes", "login error"]
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = tfidf_svm(train, y, ["my parcel is late", "the app shows an error"], n_classes=3, class_weights="balanced")
    assert scores.shape == (2, 3) and scores.argmax(axis=1).tolist() == [1, 2]


def test_linear_probe_gives_probabilities_over_all_classes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] > 0).astype(int)
    probs = linear_probe(x, y, x[:10], n_classes=3, seed=0)  # class 2 never seen in train
    assert probs.shape == (10, 3) and np.allclose(probs.sum(axis=1), 1.0) and (probs[:, 2] == 0).all()
    assert (probs.argmax(axis=1) == y[:10]).mean() >= 0.9


def test_tfidf_probabilities_are_scaled_on_held_out_margins():
    """With five or more records per class the sigmoid is fitted out of fold; the SVM itself sees all of train."""
    rng = np.random.default_rng(0)
    words = ["lunch", "home", "late", "milk", "dinner", "train", "meeting", "call", "later", "tonight", "thanks", "soon"]
    ham = [" ".join(rng.choice(words, size=5)) for _ in range(40)]
    spam = [f"WIN cash prize now txt {rng.integers(10000, 99999)} to claim" for _ in range(8)]
    y = np.array([0] * 40 + [1] * 8)
    test = ["WIN a cash prize txt 80082 now", "call me later tonight thanks"]
    scores = tfidf_svm(ham + spam, y, test, n_classes=3, seed=0)  # a third label absent from train
    assert scores.shape == (2, 3) and (scores[:, 2] == 0).all() and np.allclose(scores.sum(axis=1), 1.0)
    assert scores.argmax(axis=1).tolist() == [1, 0]
    assert np.array_equal(scores, tfidf_svm(ham + spam, y, test, n_classes=3, seed=0))


def test_a_class_of_one_training_record_is_too_small_to_hold_out_but_still_scored():
    """Issue 17: a split too small for the baselines' cross-validation (a class of one record, two
    records in all) gives probabilities for both baselines, not scikit-learn's fold error."""
    train, y = [SPAM[0], *HAM], np.array([1, 0, 0, 0, 0])
    scores = tfidf_svm(train, y, ["WIN a FREE prize now", "see you at lunch"], n_classes=2)
    assert scores.shape == (2, 2) and np.allclose(scores.sum(axis=1), 1.0)
    two = tfidf_svm([SPAM[0], HAM[0]], np.array([1, 0]), [SPAM[1]], n_classes=2)
    assert two.shape == (1, 2) and np.isfinite(two).all()
    probs = linear_probe(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 0]), np.array([[0.9, 0.1]]), n_classes=2)
    assert probs.shape == (1, 2) and probs.argmax() == 1


def test_metadata_probe_finds_a_shortcut_column_and_fills_missing_values_with_train_medians():
    """A column that tracks the label is found; values left missing (NaN) neither fail nor decide."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    x = np.column_stack([y + rng.normal(scale=0.2, size=200), rng.normal(size=200), np.full(200, np.nan)])
    x[rng.choice(200, 30, replace=False), 0] = np.nan
    probs = metadata_probe(x[:150], y[:150], x[150:], n_classes=2, seed=0)
    known = ~np.isnan(x[150:, 0])
    assert probs.shape == (50, 2) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1)[known] == y[150:][known]).mean() >= 0.95
    assert np.array_equal(probs, metadata_probe(x[:150], y[:150], x[150:], n_classes=2, seed=0))


def test_metadata_probe_on_columns_unrelated_to_the_label_is_near_chance():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(400, 3)), rng.integers(0, 2, 400)
    accuracy = (metadata_probe(x[:300], y[:300], x[300:], n_classes=2, seed=0).argmax(axis=1) == y[300:]).mean()
    assert 0.35 <= accuracy <= 0.65
