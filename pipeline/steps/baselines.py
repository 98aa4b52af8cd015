"""Classical baselines that fine-tuning must beat on the same split (the negative-transfer check).

- `linear_probe`: logistic regression on the frozen backbone's pooled features (standardised).
- `tfidf`: TF-IDF character 2-5-grams within word boundaries and a linear SVM, for texts.

Both are deterministic (lbfgs; liblinear with a fixed `random_state`) and return one score per
class and record: probabilities for the probe, SVM decision values for TF-IDF (ranking scores,
fine for ROC-AUC, not probabilities).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC


def _weights(mode: str) -> str | None:
    return "balanced" if mode == "balanced" else None


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, n_classes: int,
                 class_weights: str = "none", seed: int = 0) -> np.ndarray:
    """Class probabilities (n_test, n_classes) from logistic regression on standardised features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight=_weights(class_weights),
                                                               random_state=seed))
    model.fit(train_x, train_y)
    return _full_width(model.predict_proba(test_x), model[-1].classes_, n_classes)


def tfidf_svm(train_texts: Sequence[str], train_y: np.ndarray, test_texts: Sequence[str], *, n_classes: int,
              class_weights: str = "none", seed: int = 0) -> np.ndarray:
    """Decision values (n_test, n_classes) of a linear SVM on TF-IDF character 2-5-grams."""
    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float64),
        LinearSVC(C=1.0, class_weight=_weights(class_weights), random_state=seed),
    )
    model.fit(list(train_texts), train_y)
    scores = model.decision_function(list(test_texts))
    if scores.ndim == 1:  # binary: one margin for the second class
        scores = np.column_stack([-scores, scores])
    return _full_width(scores, model[-1].classes_, n_classes, fill=-np.inf)


def _full_width(scores: np.ndarray, classes: np.ndarray, n_classes: int, fill: float = 0.0) -> np.ndarray:
    """Scores laid out over all `n_classes` columns (a class absent from train never wins)."""
    out = np.full((len(scores), n_classes), fill, dtype=np.float64)
    out[:, classes] = scores
    return out
