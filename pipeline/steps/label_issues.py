"""Label issues: records whose given label is probably wrong, by confident learning.

Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels"
(JAIR 2021). Out-of-fold class probabilities come from a linear model trained on the other
folds (`out_of_fold_probabilities`); from them and the given labels, `find_label_issues`

1. takes per class j the threshold t_j, the mean probability of j over records labelled j;
2. counts the confident joint C[i][j]: records labelled i whose probability of j reaches t_j,
   each counted once, under the most probable class that reaches its threshold;
3. calibrates each row of C to the number of records labelled i (the paper's C tilde), which
   estimates how many records labelled i truly belong to j;
4. prunes by noise rate: for each i != j it flags that many records labelled i, those with the
   largest margin p_j - p_i (and only where the margin is positive: see `prune_by_noise_rate`).

Folds are keyed on (seed, group id), so records of one group share a fold and nothing depends
on record order; rows are fitted in an order of their own content, so a permutation of the input
permutes the output and changes no bit of it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.seeding import derive_seed

MAX_ITER = 1_000  # lbfgs iterations: fixed, so the fitted weights (and the bytes) never vary with a default
ISSUE_COLUMNS = ("position", "given_label", "suggested_label", "self_confidence")

Features = np.ndarray | sp.spmatrix | sp.sparray


# --- folds ----------------------------------------------------------------------------------

def fold_of(group_ids: Sequence[Hashable] | np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number (0 .. folds-1) of each record, decided by its group alone.

    Groups are sorted by a hash of (seed, group id) and dealt round-robin, so every fold gets a
    group while there are at least `folds` groups, and the order of the records does not matter.
    """
    _check_folds(folds, "fold_of")
    keys = [_plain(g) for g in group_ids]
    ranked = sorted(set(keys), key=lambda g: (derive_seed(seed, "label_issues", "fold", g), repr(g)))
    fold = {g: rank % folds for rank, g in enumerate(ranked)}
    return np.fromiter((fold[g] for g in keys), dtype=np.int64, count=len(keys))


def _plain(value: Hashable) -> Hashable:
    """A numpy scalar as the Python value it holds, so `np.str_('a')` and `'a'` hash alike."""
    return value.item() if isinstance(value, np.generic) else value


def _check_folds(folds: int, where: str) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise ValueError(f"The 'folds' parameter of {where} must be an int >= 2. Got {folds!r} instead.")


# --- out-of-fold probabilities ----------------------------------------------------------------

def text_ngrams(texts: Sequence[str]) -> sp.csr_matrix | None:
    """TF-IDF of each text's character 2- to 5-grams within word bounds (sublinear counts, n-grams
    in at least two texts), or None when no n-gram is shared. Fitted on every text: the vocabulary
    and the weights see no label, so no fold learns another's answers from them."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectoriser = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, dtype=np.float64)
    try:
        return sp.csr_matrix(vectoriser.fit_transform(list(texts)))
    except ValueError:  # an empty vocabulary: too few texts, or none alike
        return None


def out_of_fold_probabilities(features: Features, labels: Sequence[Hashable] | np.ndarray,
                              group_ids: Sequence[Hashable] | np.ndarray, *, folds: int = 5, seed: int,
                              C: float = 1.0) -> np.ndarray:
    """Class probabilities (n, classes) of each record from a model that never saw its group.

    Per fold, logistic regression (lbfgs, `MAX_ITER`, inverse regularisation `C`) is fitted on
    the other folds: on standardised features when they are dense, as given when sparse.
    Columns are the classes in sorted order (`np.unique(labels)`); a class the training part
    lacks gets 0, so every row still sums to 1 over all of them.
    """
    labels = np.asarray(labels)
    x = _as_matrix(features)
    _check_lengths(x.shape[0], len(labels), len(group_ids))
    _check_folds(folds, "out_of_fold_probabilities")
    classes, codes = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"out_of_fold_probabilities needs at least 2 classes in 'labels'. Got {len(classes)}.")
    fold = fold_of(group_ids, folds, seed)
    if len(np.unique(fold)) < folds:
        raise ValueError(f"out_of_fold_probabilities needs at least folds={folds} distinct groups. "
                         f"Got {len(set(map(_plain, group_ids)))}.")
    order = _canonical_order(x, codes, group_ids)
    out = np.zeros((len(codes), len(classes)), dtype=np.float64)
    for k in range(folds):
        train, test = order[fold[order] != k], order[fold[order] == k]
        out[test] = _fit_predict(x[train], codes[train], x[test], len(classes), C)
    return out


def _as_matrix(features: Features) -> np.ndarray | sp.csr_matrix:
    """Float64 features: a 2-D array, or CSR with sorted indices (so each row has one byte form)."""
    if sp.issparse(features):
        matrix = sp.csr_matrix(features, dtype=np.float64)
        matrix.sum_duplicates()
        matrix.sort_indices()
        return matrix
    array = np.ascontiguousarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"The 'features' parameter must be 2-D (records x features). Got shape {array.shape} instead.")
    return array


def _check_lengths(*lengths: int) -> None:
    if len(set(lengths)) > 1:
        names = ("features", "labels", "group_ids")
        found = ", ".join(f"{n}={v}" for n, v in zip(names, lengths))
        raise ValueError(f"features, labels and group_ids must have one row per record. Got {found}.")


def _canonical_order(x: np.ndarray | sp.csr_matrix, codes: np.ndarray, group_ids: Sequence[Hashable]) -> np.ndarray:
    """Record positions sorted by (group, label, feature bytes): the same rows in any input order
    give the same sequence of training rows, so lbfgs sees bit-identical problems."""
    keys = [(repr(_plain(g)), int(c), _row_digest(x, i)) for i, (g, c) in enumerate(zip(group_ids, codes))]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def _row_digest(x: np.ndarray | sp.csr_matrix, i: int) -> bytes:
    if sp.issparse(x):
        start, stop = x.indptr[i], x.indptr[i + 1]
        content = x.indices[start:stop].astype(np.int64).tobytes() + x.data[start:stop].tobytes()
    else:
        content = x[i].tobytes()
    return hashlib.blake2b(content, digest_size=16).digest()


def _fit_predict(train_x: np.ndarray | sp.csr_matrix, train_y: np.ndarray, test_x: np.ndarray | sp.csr_matrix,
                 n_classes: int, C: float) -> np.ndarray:
    """Probabilities of `test_x` over all `n_classes` columns from a model fitted on the training part."""
    out = np.zeros((test_x.shape[0], n_classes), dtype=np.float64)
    present = np.unique(train_y)
    if len(present) == 1:  # nothing to separate: the one class seen is certain
        out[:, present[0]] = 1.0
        return out
    # Sparse features (TF-IDF rows, already L2-normalised) go in as they are: scaling each column
    # by its deviation blows rare n-grams up (SMS spam, 5% flips: flag F1 0.61 instead of 0.91,
    # and lbfgs ten times slower).
    scaler = "passthrough" if sp.issparse(train_x) else StandardScaler()
    model = make_pipeline(scaler, LogisticRegression(C=C, solver="lbfgs", max_iter=MAX_ITER))
    model.fit(train_x, train_y)
    out[:, model[-1].classes_] = model.predict_proba(test_x)
    return out


# --- confident learning -----------------------------------------------------------------------

def find_label_issues(labels: Sequence[Hashable] | np.ndarray, probabilities: np.ndarray, *,
                      classes: Sequence[Hashable] | np.ndarray | None = None) -> pd.DataFrame:
    """Records flagged as label errors by confident learning, pruned by noise rate.

    `probabilities[r, j]` is the out-of-sample probability that record r belongs to `classes[j]`
    (default: the column numbers 0 .. k-1, so labels are integer codes). Returns one row per
    flagged record, `ISSUE_COLUMNS`: its position, the given label, the suggested (most
    probable) label and the self-confidence (probability of the given label), least
    self-confident first, ties by position.
    """
    probs = _checked_probabilities(probabilities, len(labels))
    names = np.arange(probs.shape[1]) if classes is None else np.asarray(classes)
    if len(names) != probs.shape[1]:
        raise ValueError(f"'classes' must name each of the {probs.shape[1]} probability columns. "
                         f"Got {len(names)} classes.")
    codes = _label_codes(labels, names)
    thresholds = per_class_thresholds(codes, probs)
    counts = calibrated_joint(confident_joint(codes, probs, thresholds), np.bincount(codes, minlength=len(names)))
    flagged = prune_by_noise_rate(codes, probs, np.rint(counts).astype(np.int64))
    return _issue_table(flagged, codes, probs, names)


def per_class_thresholds(codes: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """t_j: the mean probability of class j over the records labelled j (inf for a class nobody has)."""
    k = probs.shape[1]
    totals = np.bincount(codes, weights=probs[np.arange(len(codes)), codes], minlength=k)
    counts = np.bincount(codes, minlength=k)
    return np.divide(totals, counts, out=np.full(k, np.inf), where=counts > 0)


def confident_joint(codes: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """C[i][j]: records labelled i whose most probable class among those at or above their
    threshold is j (records with no class at its threshold are not counted)."""
    k = probs.shape[1]
    # A threshold is a mean: when all of a class's records hold one value it may round above it.
    above = probs >= thresholds - 1e-12
    confident = above.any(axis=1)
    suggested = np.where(above, probs, -np.inf).argmax(axis=1)
    joint = np.zeros((k, k), dtype=np.int64)
    np.add.at(joint, (codes[confident], suggested[confident]), 1)
    return joint


def calibrated_joint(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """The confident joint with each row rescaled to sum to the number of records labelled i."""
    rows = joint.sum(axis=1, keepdims=True)
    return np.divide(joint * label_counts[:, None], rows, out=np.zeros(joint.shape), where=rows > 0)


def prune_by_noise_rate(codes: np.ndarray, probs: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Positions flagged: for each i != j, the errors[i][j] records labelled i with the largest
    margin p_j - p_i (ties by position), among those whose margin is positive.

    The positive margin is ours, not the paper's: a calibrated count can exceed the records the
    model actually prefers j for, and the rest, which it gives their own label at least as
    likely, are no evidence of an error (SMS spam, 5% symmetric flips: 19 such extra flags, 16
    of them correct labels, F1 0.905 instead of 0.925).
    """
    flagged: set[int] = set()
    for i, j in zip(*np.nonzero(errors)):
        if i == j:
            continue
        members = np.flatnonzero(codes == i)
        margin = probs[members, j] - probs[members, i]
        keep = margin > 0
        members, margin = members[keep], margin[keep]
        ranked = members[np.lexsort((members, -margin))]
        flagged.update(ranked[: errors[i, j]].tolist())
    return np.array(sorted(flagged), dtype=np.int64)


def _issue_table(flagged: np.ndarray, codes: np.ndarray, probs: np.ndarray, names: np.ndarray) -> pd.DataFrame:
    confidence = probs[flagged, codes[flagged]]
    order = np.lexsort((flagged, confidence))
    rows = flagged[order]
    return pd.DataFrame({"position": rows, "given_label": names[codes[rows]],
                         "suggested_label": names[probs[rows].argmax(axis=1)],
                         "self_confidence": confidence[order]}, columns=list(ISSUE_COLUMNS))


def _checked_probabilities(probabilities: np.ndarray, n_labels: int) -> np.ndarray:
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != n_labels:
        raise ValueError(f"'probabilities' must have one row per label (shape ({n_labels}, classes)). "
                         f"Got shape {probs.shape} instead.")
    if probs.shape[1] < 2:
        raise ValueError(f"find_label_issues needs at least 2 classes (probability columns). Got {probs.shape[1]}.")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError("'probabilities' must be finite and within [0, 1].")
    return probs


def _label_codes(labels: Sequence[Hashable] | np.ndarray, names: np.ndarray) -> np.ndarray:
    """Column number of each label in `names`; a label outside them is an error naming the first such record."""
    lookup = {_plain(name): j for j, name in enumerate(names)}
    if len(lookup) != len(names):
        raise ValueError("'classes' must not repeat a class.")
    codes = np.empty(len(labels), dtype=np.int64)
    for position, label in enumerate(labels):
        code = lookup.get(_plain(label))
        if code is None:
            raise ValueError(f"Label {label!r} at position {position} is not one of the classes of the "
                             f"{len(names)} probability columns.")
        codes[position] = code
    return codes
