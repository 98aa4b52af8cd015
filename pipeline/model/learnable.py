"""Whether a split can train or score a classifier: a clear message instead of a library's traceback.

A corpus can lose classes on its way (label filters, dedup, a small class kept in train only, a
split by the source), and scikit-learn or the loss then fail deep inside with messages such as
"needs samples of at least 2 classes". The model stages check what they read first, and name the
stage, the dataset, the split and its counts.
"""
from __future__ import annotations

import pandas as pd

from pipeline.errors import StageError

WHERE_TO_LOOK = "The earlier stages' metrics (metrics/<dataset>/split.json: per_class) and ledgers say where the records went."


def require_classes(stage: str, dataset: str, labels: pd.Series, split: str = "train") -> None:
    """StageError unless `labels` (of the records of `split`) hold at least two classes."""
    counts = labels.value_counts().sort_index()
    if len(counts) >= 2:
        return
    held = "no record" if counts.empty else f"one class ({counts.index[0]!r}: {int(counts.iloc[0])} records)"
    raise StageError(f"{stage}@{dataset}: the {split} split holds {held}; a classifier needs at least two classes. "
                     + WHERE_TO_LOOK)


def require_records(stage: str, dataset: str, known: int, total: int, split: str, labels: list[str]) -> None:
    """StageError unless `known` of the `total` records of `split` have a label the model knows."""
    if known:
        return
    what = "is empty" if not total else f"holds {total} record(s), none with a label train has ({', '.join(labels)})"
    raise StageError(f"{stage}@{dataset}: the {split} split {what}; there is nothing to score. "
                     + WHERE_TO_LOOK)
