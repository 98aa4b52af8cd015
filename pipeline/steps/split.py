"""Split: stratified train/val/test by whole groups, so near duplicates never straddle a split.

Groups are taken per class in an order keyed on (seed, group id), largest first; each class first
puts one group into every split with a non-zero ratio (so no class is silently missing from test),
then each group goes to the split furthest below its target count. With single-record groups this
lands every split within one record of its target per class.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.errors import SplitError
from pipeline.params import SOURCE_SPLIT_NAMES, SplitParams
from pipeline.seeding import derive_seed

SPLITS = ("train", "val", "test")


@dataclass(slots=True)
class SplitPlan:
    """The split of every record and what was notable about making it."""

    assignment: pd.Series  # record index -> split name
    train_only_classes: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class GroupPlan:
    """Where each group goes, decided from group counts alone, and how to apply it to any records.

    `groups` (sorted group ids) and `splits` (their split) are what a partition needs; with a
    source's own split kept (`source`), a record keeps its source's split unless that is train,
    whose groups were carved (`groups` holds those); `val_is_test` turns a source's val into test.
    """

    groups: np.ndarray
    splits: np.ndarray
    train_only_classes: list[str] = field(default_factory=list)
    source: bool = False
    val_is_test: bool = False

    def assign(self, records: pd.DataFrame) -> pd.Series:
        """The split of each record (index kept), by its group (and its source's split)."""
        keys = records["group_id"].to_numpy(object).astype(str)
        at = np.minimum(np.searchsorted(self.groups, keys), max(len(self.groups) - 1, 0))
        found = self.groups[at] == keys if len(self.groups) else np.zeros(len(keys), bool)
        carved = pd.Series(np.where(found, self.splits[at] if len(self.splits) else None, None), index=records.index, dtype=object)
        if not self.source:
            return carved
        names = _source_names(records["source_split"])
        if self.val_is_test:
            names = names.replace({"val": "test"})
        train = (names == "train").to_numpy() & found  # a train record whose group was carved goes where its group went
        return names.where(~train, carved)


def group_counts(records: pd.DataFrame, *, keep_source: bool = False) -> pd.DataFrame:
    """Records per (group_id, label, source_split) of one partition: all the split needs to decide
    (sum the rows of equal keys across partitions; `source_split` is None unless it is kept)."""
    source = records["source_split"] if keep_source else pd.Series(None, index=records.index, dtype=object)
    frame = pd.DataFrame({"group_id": records["group_id"].to_numpy(object), "label": records["label"].to_numpy(object),
                          "source_split": source.to_numpy(object)})
    counts = frame.groupby(["group_id", "label", "source_split"], sort=True, dropna=False).size()
    return counts.rename("n").reset_index()


def plan_groups(counts: pd.DataFrame, params: SplitParams, seed: int, *, separator: str | None = None,
                keep_source: bool = False) -> GroupPlan:
    """The split of every group from the summed `group_counts`: stratified by the group's majority
    label, or by iterative stratification of label sets (`separator`), or the source's own split
    with what it lacks carved out of its train part (`keep_source`)."""
    if keep_source:
        return _source_plan(counts, params, seed)
    ratios = {s: getattr(params, s) for s in SPLITS}
    if separator:
        where, train_only = _iterative(counts, ratios, seed, separator), []
    else:
        where, train_only = _stratify(counts, ratios, seed, params.small_class)
    return _plan(where, train_only)


def stratified_group_split(records: pd.DataFrame, params: SplitParams, seed: int) -> SplitPlan:
    """Assign every record to a split by its group, stratified by the group's label."""
    return _applied(records, plan_groups(group_counts(records), params, seed))


def iterative_group_split(records: pd.DataFrame, params: SplitParams, seed: int, separator: str) -> SplitPlan:
    """Multi-label split by iterative stratification (Sechidis et al., 2011), over whole groups.

    Repeatedly takes the label with the fewest records still unassigned and gives each group that
    carries it (largest first, then in an order keyed on the seed) to the split that most lacks
    that label, breaking ties by the split that most lacks records. Labels are the separator-joined
    sets the clean stage writes.
    """
    return _applied(records, plan_groups(group_counts(records), params, seed, separator=separator))


def source_split_plan(records: pd.DataFrame, params: SplitParams, seed: int) -> SplitPlan:
    """Keep the split a source ships, carving what it lacks out of its train part.

    A source with train and val only (like an image folder with `train/` and `val/`) is evaluated
    on its own val: that becomes test, and a new val is carved from train. A source with train
    only gets val and test carved from train by the configured ratios.
    """
    return _applied(records, plan_groups(group_counts(records, keep_source=True), params, seed, keep_source=True))


def _applied(records: pd.DataFrame, plan: GroupPlan) -> SplitPlan:
    return SplitPlan(plan.assign(records), plan.train_only_classes)


def _plan(where: dict[str, str], train_only: list[str], **source: bool) -> GroupPlan:
    groups = np.array(sorted(where), dtype=object).astype(str)
    return GroupPlan(groups, np.array([where[g] for g in groups], dtype=object), train_only, **source)


def group_labels(counts: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its id, size and majority label (ties broken by label name)."""
    per_label = counts.groupby(["group_id", "label"], sort=True)["n"].sum().reset_index()
    ordered = per_label.sort_values(["group_id", "n", "label"], ascending=[True, False, True])
    majority = ordered.drop_duplicates("group_id")[["group_id", "label"]]
    sizes = per_label.groupby("group_id")["n"].sum().rename("size").reset_index()
    return majority.merge(sizes, on="group_id")


def _stratify(counts: pd.DataFrame, ratios: dict[str, float], seed: int, small_class: str) -> tuple[dict[str, str], list[str]]:
    groups = group_labels(counts)
    groups["order"] = [derive_seed(seed, "split", g) for g in groups["group_id"]]
    needed = sum(r > 0 for r in ratios.values())
    where: dict[str, str] = {}
    train_only: list[str] = []
    for label, members in groups.groupby("label", sort=True):
        members = members.sort_values(["size", "order"], ascending=[False, True])
        if len(members) >= needed:
            where.update(_fill(members, ratios))
            continue
        if small_class == "fail":
            raise SplitError(
                f"class {label!r} has {len(members)} group(s), too few for {needed} splits; "
                "add records, or set split.small_class: train_only to keep it in train only"
            )
        train_only.append(str(label))
        where.update(dict.fromkeys(members["group_id"], "train"))
    return where, train_only


def _iterative(counts: pd.DataFrame, ratios: dict[str, float], seed: int, separator: str) -> dict[str, str]:
    candidates = [s for s in SPLITS if ratios[s] > 0]
    groups = _label_sets(counts, separator)
    groups["order"] = [derive_seed(seed, "split", g) for g in groups["group_id"]]
    groups = groups.sort_values(["size", "order"], ascending=[False, True])
    per_label = Counter(label for labels, n in zip(groups["labels"], groups["size"]) for label in labels for _ in range(n))
    wanted = {s: {label: n * ratios[s] for label, n in per_label.items()} for s in SPLITS}
    room = {s: int(counts["n"].sum()) * ratios[s] for s in SPLITS}
    where: dict[str, str] = {}
    remaining = per_label.copy()
    pending = list(zip(groups["group_id"], groups["labels"], groups["size"]))
    while pending:
        label = min((l for l, n in remaining.items() if n > 0), key=lambda l: (remaining[l], l), default=None)
        chosen = [g for g in pending if label is None or label in g[1]]
        for group, labels, size in chosen:
            split = max(candidates, key=lambda s: (wanted[s].get(label, 0) if label else 0, room[s], -SPLITS.index(s)))
            where[group] = split
            room[split] -= size
            for l in labels:
                wanted[split][l] -= size
                remaining[l] -= size
        pending = [g for g in pending if g[0] not in where]
    return where


def _label_sets(counts: pd.DataFrame, separator: str) -> pd.DataFrame:
    """One row per group: its id, size and the union of its records' labels (a frozenset)."""
    sets = counts.groupby("group_id")["label"].agg(lambda labels: frozenset(l for v in labels for l in v.split(separator)))
    sizes = counts.groupby("group_id")["n"].sum()
    return pd.DataFrame({"group_id": sets.index, "labels": sets.to_numpy(), "size": sizes.loc[sets.index].to_numpy()})


def _fill(members: pd.DataFrame, ratios: dict[str, float]) -> dict[str, str]:
    """Group id -> split for one class (members sorted largest first).

    The smallest groups first give every non-empty split one group; the rest go, largest first,
    to the split furthest below its target.
    """
    total = int(members["size"].sum())
    target = {s: total * r for s, r in ratios.items()}
    count = dict.fromkeys(SPLITS, 0)
    groups = list(zip(members["group_id"], members["size"].astype(int)))
    seeds = [s for s in ("test", "val", "train") if ratios[s] > 0]
    reserved, rest = groups[len(groups) - len(seeds):], groups[: len(groups) - len(seeds)]
    out: dict[str, str] = {}
    for (group, size), split in zip(reversed(reserved), seeds):
        out[group], count[split] = split, count[split] + size
    for group, size in rest:
        split = max(seeds, key=lambda s: (target[s] - count[s], -SPLITS.index(s)))
        out[group], count[split] = split, count[split] + size
    return out


def _source_plan(counts: pd.DataFrame, params: SplitParams, seed: int) -> GroupPlan:
    names = _source_names(counts["source_split"])
    present = set(names)
    val_is_test = "test" not in present and "val" in present
    if val_is_test:
        names = names.replace({"val": "test"})
    missing = {s: getattr(params, s) for s in ("val", "test") if s not in set(names) and getattr(params, s) > 0}
    if not missing:
        return _plan({}, [], source=True, val_is_test=val_is_test)
    ratios = {"train": 1 - sum(missing.values()), "val": missing.get("val", 0.0), "test": missing.get("test", 0.0)}
    where, train_only = _stratify(counts[(names == "train").to_numpy()], ratios, seed, "train_only")
    return _plan(where, train_only, source=True, val_is_test=val_is_test)


def _source_names(raw: pd.Series) -> pd.Series:
    """Canonical split name per row (train/val/test); SplitError for missing or unknown names."""
    absent = int(raw.isna().sum())
    if absent:
        raise SplitError(f"{absent} record(s) have no source split; every record needs one when source_split is 'keep'")
    names = raw.map(lambda s: SOURCE_SPLIT_NAMES.get(str(s).strip().lower()))
    unknown = sorted(set(raw[names.isna()].astype(str)))
    if unknown:
        raise SplitError(f"unknown source split name(s) {unknown}; expected one of {sorted(SOURCE_SPLIT_NAMES)}")
    if "train" not in set(names):
        raise SplitError("the source has no train split; keep its split only when it ships one")
    return names


def split_report(records: pd.DataFrame, assignment: pd.Series, params: SplitParams, separator: str | None = None) -> dict:
    """Counts per split and class, achieved class proportions, and groups found on two sides.

    With a multi-label `separator`, proportions are per individual label.
    """
    frame = pd.DataFrame({"group_id": records["group_id"].to_numpy(object), "label": records["label"].to_numpy(object),
                          "split": assignment.to_numpy(object)})
    counts = frame.groupby(["group_id", "label", "split"], sort=True).size().rename("n").reset_index()
    return split_report_from_counts(counts, params, separator)


def split_report_from_counts(counts: pd.DataFrame, params: SplitParams, separator: str | None = None) -> dict:
    """`split_report` from records counted per (group_id, label, split) (column `n`)."""
    labelled = counts.assign(label=counts["label"].str.split(separator)).explode("label") if separator else counts
    table = labelled.pivot_table(index="label", columns="split", values="n", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=list(SPLITS), fill_value=0).sort_index()
    per_class = {
        str(label): {s: int(row[s]) for s in SPLITS} | {f"{s}_fraction": round(row[s] / max(1, row.sum()), 4) for s in SPLITS}
        for label, row in table.iterrows()
    }
    totals = counts.groupby("split")["n"].sum()
    sides = counts.groupby("group_id")["split"].nunique()
    return {
        "counts": {s: int(totals.get(s, 0)) for s in SPLITS},
        "target": {s: getattr(params, s) for s in SPLITS},
        "per_class": per_class,
        "groups_on_two_sides": int((sides > 1).sum()),
    }
