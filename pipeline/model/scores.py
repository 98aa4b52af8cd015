"""Classification scores shared by fine-tuning (model selection), the baselines and evaluation.

Besides accuracy and F1: ROC-AUC for binary tasks, the expected calibration error (ECE) with its
reliability table, and the side-by-side comparison of the fine-tuned model with its baselines.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Macro-averaged F1 over all `n_classes` (a class never predicted counts as 0)."""
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro", zero_division=0))


def classification_scores(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6) if len(y_true) else 0.0,
        "macro_f1": round(macro_f1(y_true, y_pred, len(labels)), 6),
        "per_class": {
            label: {"precision": round(float(p), 6), "recall": round(float(r), 6), "f1": round(float(f), 6), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": {"labels": list(labels), "rows_true_cols_pred": confusion_matrix(y_true, y_pred, labels=ids).tolist()},
    }


def probability_scores(y_true: Sequence[int], scores: np.ndarray, *, bins: int, calibrated: bool = True) -> dict[str, Any]:
    """ROC-AUC (binary tasks, from any monotone score of the second class) and, for probabilities, the ECE."""
    out: dict[str, Any] = {}
    auc = binary_roc_auc(y_true, scores)
    if auc is not None:
        out["roc_auc"] = round(auc, 6)
    if calibrated:
        out["ece"] = round(expected_calibration_error(y_true, scores, bins=bins), 6)
    return out


def binary_roc_auc(y_true: Sequence[int], scores: np.ndarray) -> float | None:
    """Area under the ROC curve of class 1 against class 0; None unless the task is binary with both present."""
    y = np.asarray(y_true)
    if scores.ndim != 2 or scores.shape[1] != 2 or len(np.unique(y)) != 2:
        return None
    return float(roc_auc_score(y, scores[:, 1]))


def reliability(y_true: Sequence[int], probs: np.ndarray, *, bins: int) -> list[dict[str, float]]:
    """Equal-width bins of top-class confidence: per non-empty bin its mean confidence, accuracy and count."""
    y, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return []
    confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == y)
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins] -> k
    rows = []
    for k in range(bins):
        inside = index == k
        if inside.any():
            rows.append({"bin": k, "lower": round(k / bins, 6), "upper": round((k + 1) / bins, 6),
                         "confidence": round(float(confidence[inside].mean()), 6),
                         "accuracy": round(float(correct[inside].mean()), 6), "count": int(inside.sum())})
    return rows


def expected_calibration_error(y_true: Sequence[int], probs: np.ndarray, *, bins: int = 15) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins."""
    table = reliability(y_true, probs, bins=bins)
    total = sum(row["count"] for row in table)
    if not total:
        return 0.0
    return float(sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table) / total)


def compare_with_baselines(model: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each baseline's scores beside the model's macro-F1 difference, a verdict and whether it was beaten.

    The verdict is `better`, `tie` or `worse` (the model's macro-F1 against the baseline's). `worse`
    means negative transfer, or a model not worth shipping: those baselines are listed in `not_beaten`.
    """
    side_by_side, not_beaten = {}, []
    for name in sorted(baselines):
        delta = round(model["macro_f1"] - baselines[name]["macro_f1"], 6)
        verdict = "better" if delta > 0 else "tie" if delta == 0 else "worse"
        side_by_side[name] = {**baselines[name], "model_minus_baseline_macro_f1": delta, "verdict": verdict,
                              "beaten": verdict == "better"}
        if verdict == "worse":
            not_beaten.append(name)
    return {"baselines": side_by_side, "not_beaten": not_beaten}


def macro_f1_difference_interval(y_true: Sequence[int], model_pred: Sequence[int], base_pred: Sequence[int], n_classes: int,
                                  *, generator: np.random.Generator, rounds: int = 2000, level: float = 0.95) -> list[float]:
    """Paired bootstrap interval of macro-F1(model) - macro-F1(baseline) on the same test records.

    Each round resamples the test records with replacement and scores both predictions on the
    same sample, so the interval reflects how much the difference depends on which records the
    split happened to put in test. An interval that straddles 0 means this test split cannot tell
    the two apart.
    """
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y_true, model_pred, base_pred))
    if len(y) == 0:
        return [0.0, 0.0]
    per_chunk = max(1, 2_000_000 // len(y))  # bound the index matrix at about 16 MB
    deltas = []
    for start in range(0, rounds, per_chunk):
        sample = generator.integers(0, len(y), size=(min(per_chunk, rounds - start), len(y)))
        deltas.append(_macro_f1_rows(y[sample], a[sample], n_classes) - _macro_f1_rows(y[sample], b[sample], n_classes))
    low, high = np.quantile(np.concatenate(deltas), [(1 - level) / 2, (1 + level) / 2])
    return [round(float(low), 6), round(float(high), 6)]


def _macro_f1_rows(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each row of (y, pred), as `macro_f1` computes it (a class never predicted nor present: 0)."""
    total = np.zeros(len(y))
    for c in range(n_classes):
        hits = ((y == c) & (pred == c)).sum(axis=1)
        denominator = (y == c).sum(axis=1) + (pred == c).sum(axis=1)
        total += np.divide(2.0 * hits, denominator, out=np.zeros(len(y)), where=denominator > 0)
    return total / n_classes


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    if z.size == 0:
        return z
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def argmax(logits: np.ndarray) -> np.ndarray:
    """Predicted class per row (first maximum on ties)."""
    return np.asarray(logits).argmax(axis=1)
