"""Rebalance: bring train classes to their targets, by per-record decisions or imbalanced-learn.

The random strategies decide each record's fate from class counts, the seed and its own id
(`pipeline.steps.order`), so they run partition by partition with the same result: a class above
its target keeps the records first in the seed's order; a class below gets the same number of
copies of every record and one more for the records first in that order (each record copied
as evenly as the shortfall allows: a lower-variance form of sampling with replacement).
Oversampled copies get new ids and name their root original as parent; undersampled records are
dropped with a reason. Cleaning under-samplers (imbalanced-learn's Tomek links and edited nearest
neighbours) need distances between records: they run on embeddings from the offline pretrained
models (neighbours by cosine) and drop the records they remove.
SMOTE interpolates new points between neighbours, which are not records: it applies to feature
vectors, for heads trained on embeddings (finetune's linear probe, `pipeline.model.smote`), never
to the dataset.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.errors import RebalanceError
from pipeline.ledger import Fates, Processed
from pipeline.params import RebalanceParams
from pipeline.records import make_id, op_json
from pipeline.steps import order
from pipeline.steps.augment import VariantPlan, shortfalls
from pipeline.steps.vectors import unit_rows

CLEANING = ("tomek_links", "edited_nearest_neighbours")
ORDER = "rebalance-order"  # the seed's order of a class: who is kept, copied once more, augmented once more


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


@dataclass(frozen=True, slots=True)
class ResamplePlan:
    """What the random strategies do to each train record, from class counts: a class above its
    target keeps its records first in the seed's order, up to `keep[label]`; a class below gets
    `copies[label]` copies of every record and one more for those up to `extra[label]`."""

    keep: dict[str, order.Cutoff] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    extra: dict[str, order.Cutoff] = field(default_factory=dict)


def resample_ranks(class_counts: dict[str, int], params: RebalanceParams) -> tuple[dict[str, int], dict[str, int]]:
    """(per class, the rank its cutoff is found at: the records it keeps, above its target, or that get
    one copy more, below it; per class below its target, the copies every record gets)."""
    if params.strategy == "none" or len(class_counts) < 2:
        return {}, {}
    targets = class_targets(Counter(class_counts), params)
    ranks, copies = {}, {}
    for label, n in sorted(class_counts.items()):
        if targets[label] < n:
            ranks[label] = targets[label]
        elif targets[label] > n:
            copies[label], ranks[label] = divmod(targets[label] - n, n)
    return ranks, copies


def resample_plan(ranks: dict[str, int], copies: dict[str, int], cutoffs: dict[str, order.Cutoff]) -> ResamplePlan:
    """The plan from `resample_ranks` and the cutoffs found at its ranks (a rank of 0 has none)."""
    keep = {label: cutoffs[label] for label in ranks if label not in copies}
    extra = {label: cutoffs[label] for label in ranks if label in copies and label in cutoffs}
    return ResamplePlan(keep, copies, extra)


def resample(records: pd.DataFrame, *, plan: ResamplePlan, seed: int) -> Processed:
    """One partition of train: the records its plan keeps and their copies; copies generated from
    their parents, the others dropped as undersampled."""
    first = order.first(records, {**plan.keep, **plan.extra}, seed, ORDER)
    dropped = records["label"].isin(list(plan.keep)).to_numpy() & ~first
    kept = records[~dropped].reset_index(drop=True)
    once_more = first[~dropped] & kept["label"].isin(list(plan.extra)).to_numpy()
    times = kept["label"].map(plan.copies).fillna(0).astype(int).to_numpy() + once_more
    copies = _copies(kept, np.repeat(np.arange(len(kept)), times))
    fates = Fates.generated(copies["id"], copies["parent_id"], "oversampled") + Fates.dropped(records.loc[dropped, "id"], "undersampled")
    return Processed(pd.concat([kept, copies], ignore_index=True), fates)


def drop_ids(records: pd.DataFrame, *, ids: frozenset[str], reason: str) -> Processed:
    """One partition: its records but `ids`, which are dropped for `reason`."""
    out = records["id"].isin(ids).to_numpy()
    return Processed(records[~out].reset_index(drop=True), Fates.dropped(records.loc[out, "id"], reason))


def augment_shortfalls(class_counts: dict[str, int], originals: dict[str, int], params: RebalanceParams) -> dict[str, tuple[int, int]]:
    """augment_over's (variants per original, originals that get one more) per class below its target:
    its missing records spread as evenly as possible over its originals (records without a parent)."""
    return shortfalls(class_counts, class_targets(Counter(class_counts), params), spread_over=originals)


def augment_plan(short: dict[str, tuple[int, int]], cutoff: dict[str, order.Cutoff]) -> VariantPlan:
    """augment_over's plan from its shortfalls and the cutoffs of `extra_variants(short)` among originals."""
    return VariantPlan(base={label: base for label, (base, _) in short.items()}, cutoff=cutoff, ordering=ORDER,
                       originals_only=True)


def rebalance(train: pd.DataFrame, params: RebalanceParams, seed: int, embeddings: np.ndarray | None = None) -> Rebalanced:
    """Resample `train` held whole (the stage does the same on partitions); the result does not
    depend on its row order. `embeddings` (rows in id order) are needed by the cleaning strategies only."""
    train = train.sort_values("id", kind="stable").reset_index(drop=True)
    if params.strategy in CLEANING:
        return _clean(train, params, embeddings) if train["label"].nunique() >= 2 else Rebalanced(train, train.iloc[0:0])
    class_counts = {str(k): int(v) for k, v in train["label"].value_counts().items()}
    ranks, copies = resample_ranks(class_counts, params)
    plan = resample_plan(ranks, copies, order.cutoffs(train, ranks, seed, ORDER))
    done = resample(train, plan=plan, seed=seed)
    generated = done.records["id"].isin(done.fates.of("generated")["id"]).to_numpy()
    return Rebalanced(done.records, done.records[generated].reset_index(drop=True), done.fates)


def _clean(train: pd.DataFrame, params: RebalanceParams, embeddings: np.ndarray | None) -> Rebalanced:
    from imblearn.under_sampling import EditedNearestNeighbours, TomekLinks

    if embeddings is None or len(embeddings) != len(train):
        raise ValueError(f"{params.strategy} needs one embedding per train record")
    neighbours = 2 if params.strategy == "tomek_links" else params.n_neighbors + 1
    if len(train) < neighbours:
        raise RebalanceError(f"rebalance.strategy {params.strategy} needs at least {neighbours} train records "
                             f"(each record and its nearest neighbours); train has {len(train)}")
    sampler = TomekLinks() if params.strategy == "tomek_links" else EditedNearestNeighbours(n_neighbors=params.n_neighbors)
    sampler.fit_resample(unit_rows(embeddings), train["label"].to_numpy())
    kept = np.sort(np.asarray(sampler.sample_indices_))
    dropped = sorted(set(train["id"]) - set(train["id"].iloc[kept]))
    return Rebalanced(train.iloc[kept].reset_index(drop=True), train.iloc[0:0], Fates.dropped(dropped, params.strategy))


def _copies(train: pd.DataFrame, picked: np.ndarray) -> pd.DataFrame:
    """New records copying `train.iloc[picked]`, each with a stable id and its root original as parent."""
    source = train.iloc[picked].copy()
    nth = source.groupby("id").cumcount()
    root = source["parent_id"].where(source["parent_id"].notna(), source["id"])
    source["op"] = [op_json({"op": "oversample", "copy_of": i}) for i in source["id"]]
    source["id"] = [make_id(i, "oversample", n) for i, n in zip(source["id"], nth)]
    source["parent_id"] = root
    return source.reset_index(drop=True)
