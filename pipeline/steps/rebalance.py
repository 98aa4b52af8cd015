"""Rebalance: resample train classes towards a target ratio with imbalanced-learn.

The samplers work on an index array, so they apply to any record. Oversampled copies get new ids
and name their root original as parent; undersampled records are dropped with a reason.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.params import RebalanceParams
from pipeline.records import make_id, op_json
from pipeline.seeding import derive_seed


@dataclass(slots=True)
class Rebalanced:
    """Train after resampling, the copies it gained and the ids it lost."""

    train: pd.DataFrame
    copies: pd.DataFrame
    dropped: list[str] = field(default_factory=list)


def class_targets(counts: Counter[str], params: RebalanceParams) -> dict[str, int]:
    """Records per class after resampling, so that smallest/largest reaches `params.ratio`."""
    if params.strategy == "random_over":
        floor = math.ceil(params.ratio * max(counts.values()))
        return {c: max(n, floor) for c, n in counts.items()}
    if params.strategy == "random_under":
        ceiling = max(min(counts.values()), math.floor(min(counts.values()) / params.ratio))
        return {c: min(n, ceiling) for c, n in counts.items()}
    return dict(counts)


def rebalance(train: pd.DataFrame, params: RebalanceParams, seed: int) -> Rebalanced:
    """Resample `train` (sorted by id first, so the result does not depend on input order)."""
    train = train.sort_values("id", kind="stable").reset_index(drop=True)
    counts = Counter(train["label"])
    if params.strategy == "none" or len(counts) < 2:
        return Rebalanced(train, train.iloc[0:0])
    sampler = _sampler(params, class_targets(counts, params), seed)
    sampler.fit_resample(np.arange(len(train)).reshape(-1, 1), train["label"].to_numpy())
    chosen = np.asarray(sampler.sample_indices_)
    if params.strategy == "random_under":
        kept = np.sort(chosen)
        dropped = sorted(set(train["id"]) - set(train["id"].iloc[kept]))
        return Rebalanced(train.iloc[kept], train.iloc[0:0], dropped)
    copies = _copies(train, chosen[len(train):])
    return Rebalanced(pd.concat([train, copies], ignore_index=True), copies)


def _sampler(params: RebalanceParams, targets: dict[str, int], seed: int):
    from imblearn.under_sampling import RandomUnderSampler
    from imblearn.over_sampling import RandomOverSampler

    cls = RandomOverSampler if params.strategy == "random_over" else RandomUnderSampler
    return cls(sampling_strategy=targets, random_state=derive_seed(seed, "rebalance", bits=32))


def _copies(train: pd.DataFrame, picked: np.ndarray) -> pd.DataFrame:
    """New records copying `train.iloc[picked]`, each with a stable id and its root original as parent."""
    source = train.iloc[picked].copy()
    nth = source.groupby("id").cumcount()
    root = source["parent_id"].where(source["parent_id"].notna(), source["id"])
    source["op"] = [op_json({"op": "oversample", "copy_of": i}) for i in source["id"]]
    source["id"] = [make_id(i, "oversample", n) for i, n in zip(source["id"], nth)]
    source["parent_id"] = root
    return source.reset_index(drop=True)
