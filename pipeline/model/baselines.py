"""Classical baselines that fine-tuning must beat on the same split (the negative-transfer check).

- `linear_probe`: logistic regression on the frozen backbone's pooled features (standardised).
- `tfidf`: TF-IDF character 2-5-grams within word boundaries and a linear SVM, for texts, with
  Platt scaling fitted on out-of-fold margins.
- `metadata_probe`: logistic regression on the prepared metadata features alone (values left missing
  take train's median), which measures how much of the label the metadata columns give away.

Both are deterministic (lbfgs; liblinear with a fixed `random_state`; unshuffled stratified folds)
and return class probabilities per record.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
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


def metadata_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, n_classes: int,
                   class_weights: str = "none", seed: int = 0) -> np.ndarray:
    """Class probabilities (n_test, n_classes) from logistic regression on the metadata features;
    a value left missing (`missing: keep`) takes its feature's train median (0 if train has none)."""
    model = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(),
                          LogisticRegression(C=1.0, max_iter=2000, class_weight=_weights(class_weights), random_state=seed))
    model.fit(train_x, train_y)
    return _full_width(model.predict_proba(test_x), model[-1].classes_, n_classes)


def tfidf_svm(train_texts: Sequence[str], train_y: np.ndarray, test_texts: Sequence[str], *, n_classes: int,
              class_weights: str = "none", seed: int = 0, folds: int = 5) -> np.ndarray:
    """Class probabilities (n_test, n_classes) of a linear SVM on TF-IDF character 2-5-grams.

    An SVM's margin of 0 is a poor threshold for a minority class: its training records sit
    beyond the margin, unseen ones do not. So the SVM is fitted on all of train and a sigmoid per
    class (Platt scaling) on its margins for records it did not see, from `folds` stratified
    folds. Measured on SMS spam, same split: macro-F1 0.962 at margin 0, 0.985 scaled. A class
    with fewer than `folds` records leaves too little to hold out: the sigmoid is then fitted on
    the training margins, which keeps about the margin's decisions.
    """
    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float64)
    x, test_x = vectoriser.fit_transform(list(train_texts)), vectoriser.transform(list(test_texts))
    svm = LinearSVC(C=1.0, class_weight=_weights(class_weights), random_state=seed)
    everything = np.arange(len(train_y))
    smallest = int(np.bincount(train_y)[np.unique(train_y)].min())
    cv = folds if smallest >= folds else [(everything, everything)]
    model = CalibratedClassifierCV(svm, method="sigmoid", cv=cv, ensemble=False).fit(x, train_y)
    return _full_width(model.predict_proba(test_x), model.classes_, n_classes)


def _full_width(probs: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Probabilities laid out over all `n_classes` columns (a class absent from train gets 0)."""
    out = np.zeros((len(probs), n_classes), dtype=np.float64)
    out[:, classes] = probs
    return out
