"""Rebalance: resample train classes with imbalanced-learn.

Random samplers work on an index array, so they apply to any record: oversampled copies get new
ids and name their root original as parent; undersampled records are dropped with a reason.
Cleaning under-samplers (Tomek links, edited nearest neighbours) need distances between records:
they run on embeddings from the offline pretrained models (neighbours by cosine) and drop the records they remove.
SMOTE interpolates new points between neighbours, which are not records: it applies to feature
vectors, for heads trained on embeddings (finetune's linear probe), never to the dataset.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.errors import RebalanceError
from pipeline.ledger import Fates
from pipeline.params import RebalanceParams
from pipeline.records import make_id, op_json
from pipeline.seeding import derive_seed

CLEANING = ("tomek_links", "edited_nearest_neighbours")


@dataclass(slots=True)
class Rebalanced:
    """Train after resampling, the records it gained, and the fates: each gained record generated
    from its parent, each lost one dropped with the reason."""

    train: pd.DataFrame
    copies: pd.DataFrame
    fates: Fates = field(default_factory=Fates)

    @property
    def dropped(self) -> list[str]:
        """Ids of the records resampling removed."""
        return self.fates.of("dropped")["id"].tolist()


def class_targets(counts: Counter[str], params: RebalanceParams) -> dict[str, int]:
    """Records per class after resampling: per-class `counts`, or so that smallest/largest reaches `ratio`."""
    if params.counts is not None:
        wanted = {c: params.counts.get(c, n) for c, n in counts.items()}
        if params.strategy in ("random_over", "augment_over"):
            return {c: max(n, wanted[c]) for c, n in counts.items()}
        if params.strategy == "random_under":
            return {c: min(n, wanted[c]) for c, n in counts.items()}
        return wanted
    if params.strategy in ("random_over", "random_both", "augment_over"):
        floor = math.ceil(params.ratio * max(counts.values()))
        over = {c: max(n, floor) for c, n in counts.items()}
        return over
    if params.strategy == "random_under":
        ceiling = max(min(counts.values()), math.floor(min(counts.values()) / params.ratio))
        return {c: min(n, ceiling) for c, n in counts.items()}
    return dict(counts)


def rebalance(train: pd.DataFrame, params: RebalanceParams, seed: int, embeddings: np.ndarray | None = None) -> Rebalanced:
    """Resample `train` (sorted by id first, so the result does not depend on input order).

    `embeddings` (rows in id order) are needed by the cleaning strategies only.
    """
    train = train.sort_values("id", kind="stable").reset_index(drop=True)
    counts = Counter(train["label"])
    if params.strategy == "none" or len(counts) < 2:
        return Rebalanced(train, train.iloc[0:0])
    if params.strategy in CLEANING:
        return _clean(train, params, embeddings)
    targets = class_targets(counts, params)
    labels = train["label"].to_numpy()
    under = {c: min(n, targets[c]) for c, n in counts.items()}
    kept = _under(labels, under, seed) if under != dict(counts) else np.arange(len(train))
    dropped = sorted(set(train["id"]) - set(train["id"].iloc[kept]))
    train = train.iloc[kept].reset_index(drop=True)
    over = {c: max(under[c], targets[c]) for c in counts}
    picked = _over(train["label"].to_numpy(), over, seed) if over != under else np.zeros(0, dtype=int)
    copies = _copies(train, picked)
    fates = Fates.generated(copies["id"], copies["parent_id"], "oversampled") + Fates.dropped(dropped, "undersampled")
    return Rebalanced(pd.concat([train, copies], ignore_index=True), copies, fates)


def augment_counts(train: pd.DataFrame, params: RebalanceParams, seed: int) -> pd.Series:
    """Variants to make per train original so each class reaches its target (augment_over).

    Only originals (no parent) are augmented; a class's missing records are spread as evenly as
    possible over them, the extra ones first in an order keyed on the seed.
    """
    targets = class_targets(Counter(train["label"]), params)
    counts = pd.Series(0, index=train.index)
    for label, target in sorted(targets.items()):
        members = train[train["label"] == label]
        originals = members[members["parent_id"].isna()]
        missing = target - len(members)
        if missing <= 0 or originals.empty:
            continue
        order = sorted(originals.index, key=lambda i: derive_seed(seed, "rebalance-order", originals.at[i, "id"]))
        base, extra = divmod(missing, len(order))
        counts.loc[order] = [base + (rank < extra) for rank in range(len(order))]
    return counts


def _under(labels: np.ndarray, targets: dict[str, int], seed: int) -> np.ndarray:
    from imblearn.under_sampling import RandomUnderSampler

    sampler = RandomUnderSampler(sampling_strategy=targets, random_state=derive_seed(seed, "rebalance", "under", bits=32))
    sampler.fit_resample(np.arange(len(labels)).reshape(-1, 1), labels)
    return np.sort(np.asarray(sampler.sample_indices_))


def _over(labels: np.ndarray, targets: dict[str, int], seed: int) -> np.ndarray:
    """Positions of the records to copy (imbalanced-learn appends them after the originals)."""
    from imblearn.over_sampling import RandomOverSampler

    sampler = RandomOverSampler(sampling_strategy=targets, random_state=derive_seed(seed, "rebalance", bits=32))
    sampler.fit_resample(np.arange(len(labels)).reshape(-1, 1), labels)
    return np.asarray(sampler.sample_indices_)[len(labels):]


def _clean(train: pd.DataFrame, params: RebalanceParams, embeddings: np.ndarray | None) -> Rebalanced:
    from imblearn.under_sampling import EditedNearestNeighbours, TomekLinks

    if embeddings is None or len(embeddings) != len(train):
        raise ValueError(f"{params.strategy} needs one embedding per train record")
    neighbours = 2 if params.strategy == "tomek_links" else params.n_neighbors + 1
    if len(train) < neighbours:
        raise RebalanceError(f"rebalance.strategy {params.strategy} needs at least {neighbours} train records "
                             f"(each record and its nearest neighbours); train has {len(train)}")
    sampler = TomekLinks() if params.strategy == "tomek_links" else EditedNearestNeighbours(n_neighbors=params.n_neighbors)
    sampler.fit_resample(_unit_rows(embeddings), train["label"].to_numpy())
    kept = np.sort(np.asarray(sampler.sample_indices_))
    dropped = sorted(set(train["id"]) - set(train["id"].iloc[kept]))
    return Rebalanced(train.iloc[kept].reset_index(drop=True), train.iloc[0:0], Fates.dropped(dropped, params.strategy))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so nearest neighbours are by cosine similarity, as the embeddings are meant."""
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _copies(train: pd.DataFrame, picked: np.ndarray) -> pd.DataFrame:
    """New records copying `train.iloc[picked]`, each with a stable id and its root original as parent."""
    source = train.iloc[picked].copy()
    nth = source.groupby("id").cumcount()
    root = source["parent_id"].where(source["parent_id"].notna(), source["id"])
    source["op"] = [op_json({"op": "oversample", "copy_of": i}) for i in source["id"]]
    source["id"] = [make_id(i, "oversample", n) for i, n in zip(source["id"], nth)]
    source["parent_id"] = root
    return source.reset_index(drop=True)


def smote_features(features: np.ndarray, labels: np.ndarray, *, ratio: float, neighbors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature vectors and labels with SMOTE's synthetic minority points appended (originals first, unchanged).

    Each class below `ratio` x the largest gets new points up to that ratio; a class with fewer than
    two members cannot be interpolated and is left as it is. k is capped at the smallest such class.
    """
    from imblearn.over_sampling import SMOTE

    counts = Counter(labels.tolist())
    floor = math.ceil(ratio * max(counts.values()))
    wanted = {c: floor for c, n in counts.items() if n < floor and n >= 2}
    if not wanted:
        return features, labels
    k = min(neighbors, min(counts[c] for c in wanted) - 1)
    sampler = SMOTE(sampling_strategy=wanted, k_neighbors=k, random_state=derive_seed(seed, "smote", bits=32))
    x, y = sampler.fit_resample(features, labels)
    return np.asarray(x, dtype=features.dtype), np.asarray(y, dtype=labels.dtype)
