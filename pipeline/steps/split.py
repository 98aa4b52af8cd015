"""Split: stratified train/val/test by whole groups, so near duplicates never straddle a split.

Groups are taken per class in an order keyed on (seed, group id), largest first; each class first
puts one group into every split with a non-zero ratio (so no class is silently missing from test),
then each group goes to the split furthest below its target count. With single-record groups this
lands every split within one record of its target per class.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from pipeline.errors import SplitError
from pipeline.params import SplitParams
from pipeline.seeding import derive_seed

SPLITS = ("train", "val", "test")
SOURCE_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test"}


@dataclass(slots=True)
class SplitPlan:
    """The split of every record and what was notable about making it."""

    assignment: pd.Series  # record index -> split name
    train_only_classes: list[str] = field(default_factory=list)


def group_labels(records: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its id, size and majority label (ties broken by label name)."""
    counts = records.groupby(["group_id", "label"], sort=True).size().rename("n").reset_index()
    counts = counts.sort_values(["group_id", "n", "label"], ascending=[True, False, True])
    majority = counts.drop_duplicates("group_id")[["group_id", "label"]]
    sizes = records.groupby("group_id").size().rename("size").reset_index()
    return majority.merge(sizes, on="group_id")


def stratified_group_split(records: pd.DataFrame, params: SplitParams, seed: int) -> SplitPlan:
    """Assign every record to a split by its group, stratified by the group's label."""
    return _stratify(records, {s: getattr(params, s) for s in SPLITS}, seed, params.small_class)


def _stratify(records: pd.DataFrame, ratios: dict[str, float], seed: int, small_class: str) -> SplitPlan:
    groups = group_labels(records)
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
    return SplitPlan(records["group_id"].map(where), train_only)


def iterative_group_split(records: pd.DataFrame, params: SplitParams, seed: int, separator: str) -> SplitPlan:
    """Multi-label split by iterative stratification (Sechidis et al., 2011), over whole groups.

    Repeatedly takes the label with the fewest records still unassigned and gives each group that
    carries it (largest first, then in an order keyed on the seed) to the split that most lacks
    that label, breaking ties by the split that most lacks records. Labels are the separator-joined
    sets the clean stage writes.
    """
    ratios = {s: getattr(params, s) for s in SPLITS}
    candidates = [s for s in SPLITS if ratios[s] > 0]
    groups = _label_sets(records, separator)
    groups["order"] = [derive_seed(seed, "split", g) for g in groups["group_id"]]
    groups = groups.sort_values(["size", "order"], ascending=[False, True])
    per_label = Counter(label for labels, n in zip(groups["labels"], groups["size"]) for label in labels for _ in range(n))
    wanted = {s: {label: n * ratios[s] for label, n in per_label.items()} for s in SPLITS}
    room = {s: len(records) * ratios[s] for s in SPLITS}
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
    return SplitPlan(records["group_id"].map(where))


def _label_sets(records: pd.DataFrame, separator: str) -> pd.DataFrame:
    """One row per group: its id, size and the union of its records' labels (a frozenset)."""
    sets = records.groupby("group_id")["label"].agg(lambda labels: frozenset(l for v in labels for l in v.split(separator)))
    sizes = records.groupby("group_id").size()
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


def source_split_plan(records: pd.DataFrame, params: SplitParams, seed: int) -> SplitPlan:
    """Keep the split a source ships, carving what it lacks out of its train part.

    A source with train and val only (like an image folder with `train/` and `val/`) is evaluated
    on its own val: that becomes test, and a new val is carved from train. A source with train
    only gets val and test carved from train by the configured ratios.
    """
    names = _source_names(records)
    if "test" not in set(names) and "val" in set(names):
        names = names.replace({"val": "test"})
    missing = {s: getattr(params, s) for s in ("val", "test") if s not in set(names) and getattr(params, s) > 0}
    if not missing:
        return SplitPlan(names)
    train = records[names == "train"]
    ratios = {"train": 1 - sum(missing.values()), "val": missing.get("val", 0.0), "test": missing.get("test", 0.0)}
    carved = _stratify(train, ratios, seed, "train_only")
    assignment = names.copy()
    assignment.loc[train.index] = carved.assignment
    return SplitPlan(assignment, carved.train_only_classes)


def _source_names(records: pd.DataFrame) -> pd.Series:
    """Canonical split name per record (train/val/test); SplitError for missing or unknown names."""
    raw = records["source_split"]
    absent = int(raw.isna().sum())
    if absent:
        raise SplitError(f"{absent} record(s) have no source split; every record needs one when source_split is 'keep'")
    names = raw.map(lambda s: SOURCE_ALIASES.get(str(s).strip().lower()))
    unknown = sorted(set(raw[names.isna()].astype(str)))
    if unknown:
        raise SplitError(f"unknown source split name(s) {unknown}; expected one of {sorted(SOURCE_ALIASES)}")
    if "train" not in set(names):
        raise SplitError("the source has no train split; keep its split only when it ships one")
    return names


def split_report(records: pd.DataFrame, assignment: pd.Series, params: SplitParams, separator: str | None = None) -> dict:
    """Counts per split and class, achieved class proportions, and groups found on two sides.

    With a multi-label `separator`, proportions are per individual label.
    """
    labels = records["label"] if separator is None else records["label"].str.split(separator)
    exploded = pd.DataFrame({"label": labels, "split": assignment}).explode("label") if separator else \
        pd.DataFrame({"label": labels, "split": assignment})
    table = pd.crosstab(exploded["label"], exploded["split"]).reindex(columns=list(SPLITS), fill_value=0)
    per_class = {
        str(label): {s: int(row[s]) for s in SPLITS} | {f"{s}_fraction": round(row[s] / max(1, row.sum()), 4) for s in SPLITS}
        for label, row in table.iterrows()
    }
    sides = records.assign(split=assignment).groupby("group_id")["split"].nunique()
    return {
        "counts": {s: int((assignment == s).sum()) for s in SPLITS},
        "target": {s: getattr(params, s) for s in SPLITS},
        "per_class": per_class,
        "groups_on_two_sides": int((sides > 1).sum()),
    }
