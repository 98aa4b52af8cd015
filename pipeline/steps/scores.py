"""Classification scores shared by fine-tuning (model selection) and evaluation."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


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


def argmax(logits: np.ndarray) -> np.ndarray:
    """Predicted class per row (first maximum on ties)."""
    return np.asarray(logits).argmax(axis=1)
