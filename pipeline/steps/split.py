"""Split: stratified train/val/test by whole groups, so near duplicates never straddle a split.

Groups are taken per class in an order keyed on (seed, group id), largest first; each class first
puts one group into every split with a non-zero ratio (so no class is silently missing from test),
then each group goes to the split furthest below its target count. With single-record groups this
lands every split within one record of its target per class.
"""
from __future__ import annotations

import math
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

    def assign(self, records: pd.DataFrame, unplanned: str | None = "train") -> pd.Series:
        """The split of each record (index kept), by its group (and its source's split). A record
        of the source's train whose group the plan does not hold gets `unplanned` (None: the caller
        has its split from elsewhere)."""
        keys = records["group_id"].to_numpy(object).astype(str)
        at = np.minimum(np.searchsorted(self.groups, keys), max(len(self.groups) - 1, 0))
        found = self.groups[at] == keys if len(self.groups) else np.zeros(len(keys), bool)
        carved = pd.Series(np.where(found, self.splits[at] if len(self.splits) else None, None), index=records.index, dtype=object)
        if not self.source:
            return carved
        names = canonical_source_names(records["source_split"])
        if self.val_is_test:
            names = names.replace({"val": "test"})
        train = (names == "train").to_numpy()  # a train record whose group was carved goes where its group went
        planned = names.where(~(train & found), carved)
        return planned if unplanned == "train" else planned.where(~(train & ~found), unplanned)


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
        return _source_plan(counts, params, seed, separator)
    ratios = {s: getattr(params, s) for s in SPLITS}
    if separator:
        where, train_only = _iterative(counts, ratios, seed, separator), []
    else:
        where, train_only = _stratify(counts, ratios, seed, params.small_class)
    return group_plan(where, train_only)


def stratified_group_split(records: pd.DataFrame, params: SplitParams, seed: int) -> SplitPlan:
    """Assign every record to a split by its group, stratified by the group's label."""
    return _applied(records, plan_groups(group_counts(records), params, seed))


def iterative_group_split(records: pd.DataFrame, params: SplitParams, seed: int, separator: str) -> SplitPlan:
    """Multi-label split by iterative stratification (Sechidis et al., 2011), over whole groups.

    Repeatedly takes the label with the fewest records still unassigned and gives each group that
    carries it to the split that most lacks that label, breaking ties by the split that most lacks
    records (`iterate_groups`). Labels are the separator-joined sets the clean stage writes.
    """
    return _applied(records, plan_groups(group_counts(records), params, seed, separator=separator))


def source_split_plan(records: pd.DataFrame, params: SplitParams, seed: int, separator: str | None = None) -> SplitPlan:
    """Keep the split a source ships, carving what it lacks out of its train part (by iterative
    stratification of label sets, with a multi-label `separator`).

    A source with train and val only (like an image folder with `train/` and `val/`) is evaluated
    on its own val: that becomes test, and a new val is carved from train. A source with train
    only gets val and test carved from train by the configured ratios.
    """
    counts = group_counts(records, keep_source=True)
    return _applied(records, plan_groups(counts, params, seed, separator=separator, keep_source=True))


def single_ranks(rows: pd.DataFrame, starts: dict[tuple[str, int], int], schedules: dict[str, np.ndarray]) -> pd.DataFrame:
    """`group_id` and `split` of single-record groups, from rows (`label`, `bucket`, `order`,
    `group_id`) sorted so, holding every row of their (label, bucket): a group's rank in its class
    is where its bucket starts (`starts`, from the counts of the buckets before it) plus its place
    in the bucket, and `schedules[label][rank]` its split (`stratify_groups`)."""
    label, bucket = rows["label"].to_numpy(object), rows["bucket"].to_numpy(np.int64)
    if not len(rows):
        return pd.DataFrame({"group_id": pd.Series(dtype=object), "split": pd.Series(dtype=object)})
    run = np.concatenate(([True], (label[1:] != label[:-1]) | (bucket[1:] != bucket[:-1])))
    first = np.maximum.accumulate(np.where(run, np.arange(len(rows)), 0))
    offset = np.array([starts[(l, int(b))] for l, b in zip(label[run], bucket[run])], dtype=np.int64)
    rank = np.arange(len(rows)) - first + np.repeat(offset, np.diff(np.append(np.flatnonzero(run), len(rows))))
    codes = np.empty(len(rows), np.int64)
    for name in set(label[run].tolist()):
        mine = label == name
        codes[mine] = schedules[name][rank[mine]]
    return pd.DataFrame({"group_id": rows["group_id"].to_numpy(object), "split": np.array(SPLITS, dtype=object)[codes]})


def _applied(records: pd.DataFrame, plan: GroupPlan) -> SplitPlan:
    return SplitPlan(plan.assign(records), plan.train_only_classes)


def group_plan(where: dict[str, str], train_only: list[str], **source: bool) -> GroupPlan:
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
    where, _, train_only = stratify_groups(sized_groups(counts, seed), {}, ratios, small_class)
    return where, train_only


def sized_groups(counts: pd.DataFrame, seed: int, separator: str | None = None) -> pd.DataFrame:
    """`group_labels` (or, with a multi-label `separator`, `label_sets`) with each group's place in
    the seed's order (`order`), from summed counts that hold every row of their groups."""
    groups = label_sets(counts, separator) if separator else group_labels(counts)
    return groups.assign(order=np.array([derive_seed(seed, "split", g) for g in groups["group_id"]], dtype=np.uint64))


def stratify_groups(groups: pd.DataFrame, singles: dict[str, int], ratios: dict[str, float],
                    small_class: str) -> tuple[dict[str, str], dict[str, np.ndarray], list[str]]:
    """The split of every group of `groups` (sorted by id; `sized_groups`), and of `singles[label]`
    single-record groups per class that are not among them, by their rank in the seed's order
    (order, then id): (group -> split, label -> split code per rank, train-only classes).

    Per class, groups go largest first, then by order; single-record groups are the smallest, so
    they come last whether they are rows here or only counted, and the result is the same.
    """
    needed = sum(r > 0 for r in ratios.values())
    where: dict[str, str] = {}
    schedules: dict[str, np.ndarray] = {}
    train_only: list[str] = []
    by_label = dict(tuple(groups.groupby("label", sort=True)))
    for label in sorted(set(by_label) | {l for l, n in singles.items() if n}):
        members = by_label.get(label, groups.iloc[0:0]).sort_values(["size", "order"], ascending=[False, True], kind="stable")
        alone = singles.get(label, 0)
        if len(members) + alone >= needed:
            placed, schedules[label] = _fill(members, ratios, alone)
            where.update(placed)
            continue
        if small_class == "fail":
            raise SplitError(
                f"class {label!r} has {len(members) + alone} group(s), too few for {needed} splits; "
                "add records, or set split.small_class: train_only to keep it in train only"
            )
        train_only.append(str(label))
        where.update(dict.fromkeys(members["group_id"], "train"))
        schedules[label] = np.zeros(alone, np.uint8)
    return where, schedules, train_only


def _iterative(counts: pd.DataFrame, ratios: dict[str, float], seed: int, separator: str) -> dict[str, str]:
    groups = sized_groups(counts, seed, separator)
    alone = groups[groups["size"] == 1]
    where, schedules, _ = iterate_groups(groups[groups["size"] > 1], alone["label"].value_counts().to_dict(), ratios, separator)
    ranked = alone.sort_values(["label", "order", "group_id"], kind="stable")
    rank = ranked.groupby("label", sort=False).cumcount().to_numpy()
    for group, label, r in zip(ranked["group_id"], ranked["label"], rank):
        where[group] = SPLITS[schedules[label][r]]
    return where


def iterate_groups(groups: pd.DataFrame, singles: dict[str, int], ratios: dict[str, float],
                   separator: str) -> tuple[dict[str, str], dict[str, np.ndarray], list[str]]:
    """Iterative stratification (Sechidis et al., 2011) of whole groups: the split of every group
    of `groups` (`sized_groups` with a `separator`), and of `singles[label_set]` single-record
    groups per label set that are not among them, by their rank in the seed's order (order, then
    id): (group -> split, label set -> split code per rank, no train-only classes).

    Repeatedly takes the label with the fewest records still unassigned; the groups that carry it go,
    largest first, then by order, each to the split that most lacks that label (ties: the split
    that most lacks records, then train, val, test); then the single-record groups of each label set
    that carries it, label set by label set in name order, one at a time the same way. Single-record
    groups of one label set are alike to that rule, so only their count is needed: which of them
    gets which split follows their rank.
    """
    candidates = [s for s in SPLITS if ratios[s] > 0]
    members = groups.sort_values(["size", "order"], ascending=[False, True], kind="stable")
    pending = [(g, frozenset(l.split(separator)), int(n)) for g, l, n in zip(members["group_id"], members["label"], members["size"])]
    pools = {name: (frozenset(name.split(separator)), int(n)) for name, n in sorted(singles.items()) if n}
    per_label: Counter[str] = Counter()
    for labels, n in [(labels, n) for _, labels, n in pending] + list(pools.values()):
        per_label.update(dict.fromkeys(labels, n))
    total = sum(n for _, _, n in pending) + sum(n for _, n in pools.values())
    wanted = {s: {label: n * ratios[s] for label, n in per_label.items()} for s in SPLITS}
    room = {s: total * ratios[s] for s in SPLITS}
    remaining = per_label.copy()

    def take(labels: frozenset, split: str, n: int) -> None:
        room[split] -= n
        for l in labels:
            wanted[split][l] -= n
            remaining[l] -= n

    where: dict[str, str] = {}
    schedules: dict[str, np.ndarray] = {}
    while pending or pools:
        label = min((l for l, n in remaining.items() if n > 0), key=lambda l: (remaining[l], l), default=None)
        for group, labels, size in [g for g in pending if label is None or label in g[1]]:
            where[group] = max(candidates, key=lambda s: (wanted[s].get(label, 0) if label else 0, room[s], -SPLITS.index(s)))
            take(labels, where[group], size)
        for name in [name for name, (labels, _) in pools.items() if label is None or label in labels]:
            labels, n = pools.pop(name)
            schedules[name] = _deal(n, [wanted[s].get(label, 0) if label else 0 for s in candidates],
                                    [room[s] for s in candidates], [SPLITS.index(s) for s in candidates])
            for code, dealt in enumerate(np.bincount(schedules[name], minlength=len(SPLITS)).tolist()):
                if dealt:
                    take(labels, SPLITS[code], dealt)
        pending = [g for g in pending if g[0] not in where]
    return where, schedules, []


def _deal(n: int, lacking: list[float], room: list[float], codes: list[int]) -> np.ndarray:
    """The split codes of `n` single records dealt one at a time to the candidate that most lacks the
    label (`lacking`), then records (`room`), then comes first in `codes`; each takes one from both.
    A run that one candidate wins by more than one record is dealt at once (the same result)."""
    lacking, room = list(lacking), list(room)
    out = np.empty(n, np.uint8)
    dealt = 0
    while dealt < n:
        best = max(range(len(codes)), key=lambda i: (lacking[i], room[i], -codes[i]))
        gap = lacking[best] - max((lacking[i] for i in range(len(codes)) if i != best), default=math.inf)
        run = n - dealt if gap == math.inf else (min(n - dealt, math.ceil(gap) - 1) if gap > 1 else 1)
        out[dealt:dealt + run] = codes[best]
        lacking[best] -= run
        room[best] -= run
        dealt += run
    return out


def label_sets(counts: pd.DataFrame, separator: str) -> pd.DataFrame:
    """One row per group: its id, size and the union of its records' labels (`label`, sorted and
    joined by `separator`, as the clean stage writes a record's labels)."""
    sets = counts.groupby("group_id", sort=True)["label"].agg(
        lambda labels: separator.join(sorted({l for v in labels for l in v.split(separator)})))
    sizes = counts.groupby("group_id", sort=True)["n"].sum()
    return pd.DataFrame({"group_id": sets.index.to_numpy(object), "label": sets.to_numpy(object),
                         "size": sizes.loc[sets.index].to_numpy(np.int64)})


def _fill(members: pd.DataFrame, ratios: dict[str, float], singles: int = 0) -> tuple[dict[str, str], np.ndarray]:
    """Group id -> split for one class (members sorted largest first), and the split code of each
    of `singles` more single-record groups that follow them, by rank.

    The smallest groups first give every non-empty split one group; the rest go, largest first,
    to the split furthest below its target.
    """
    total = int(members["size"].sum()) + singles
    target = {s: total * r for s, r in ratios.items()}
    count = dict.fromkeys(SPLITS, 0)
    groups = list(zip(members["group_id"], members["size"].astype(int)))
    seeds = [s for s in ("test", "val", "train") if ratios[s] > 0]
    out: dict[str, str] = {}
    schedule = np.zeros(singles, np.uint8)
    n = len(groups) + singles

    def place(position: int, split: str) -> None:
        if position < len(groups):
            group, size = groups[position]
            out[group] = split
        else:
            schedule[position - len(groups)], size = SPLITS.index(split), 1
        count[split] += size

    for position, split in zip(reversed(range(n - len(seeds), n)), seeds):
        place(position, split)
    for position in range(n - len(seeds)):
        place(position, max(seeds, key=lambda s: (target[s] - count[s], -SPLITS.index(s))))
    return out, schedule


@dataclass(frozen=True)
class SourceLayout:
    """What a source's own split lacks: `carve` the ratios of train/val/test to cut from its train
    part (empty when it has all it needs), `val_is_test` when its val serves as test."""

    carve: dict[str, float]
    val_is_test: bool


def source_layout(totals: pd.DataFrame, params: SplitParams) -> SourceLayout:
    """The layout of a source's splits from its records counted per raw `source_split` (`n`; a
    missing split is NaN); SplitError for missing or unknown names, or no train split."""
    names = _source_names(totals["source_split"], totals["n"])
    present = set(names)
    val_is_test = "test" not in present and "val" in present
    if val_is_test:
        present = (present - {"val"}) | {"test"}
    missing = {s: getattr(params, s) for s in ("val", "test") if s not in present and getattr(params, s) > 0}
    if not missing:
        return SourceLayout({}, val_is_test)
    return SourceLayout({"train": 1 - sum(missing.values()), "val": missing.get("val", 0.0), "test": missing.get("test", 0.0)},
                        val_is_test)


def canonical_source_names(raw: pd.Series) -> pd.Series:
    """train/val/test for each raw source split name (NaN where unknown: `source_layout` refuses those)."""
    return raw.map(lambda s: SOURCE_SPLIT_NAMES.get(str(s).strip().lower()))


def source_train_rows(counts: pd.DataFrame) -> np.ndarray:
    """Which rows of `group_counts` come from the source's train split."""
    return (canonical_source_names(counts["source_split"]) == "train").to_numpy()


def _source_plan(counts: pd.DataFrame, params: SplitParams, seed: int, separator: str | None) -> GroupPlan:
    layout = source_layout(counts, params)
    if not layout.carve:
        return group_plan({}, [], source=True, val_is_test=layout.val_is_test)
    train = counts[source_train_rows(counts)]
    if separator:
        where, train_only = _iterative(train, layout.carve, seed, separator), []
    else:
        where, train_only = _stratify(train, layout.carve, seed, "train_only")
    return group_plan(where, train_only, source=True, val_is_test=layout.val_is_test)


def _source_names(raw: pd.Series, records: pd.Series | None = None) -> pd.Series:
    """Canonical split name per row (train/val/test); SplitError for missing or unknown names.
    `records` counts the records each row stands for (one each by default)."""
    missing = raw.isna().to_numpy()
    absent = int(missing.sum()) if records is None else int(records.to_numpy()[missing].sum())
    if absent:
        raise SplitError(f"{absent} record(s) have no source split; every record needs one when source_split is 'keep'")
    names = canonical_source_names(raw)
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
    totals = counts.groupby(["label", "split"], sort=True)["n"].sum().reset_index()
    return split_report_from_totals(totals, two_sided_groups(counts), params, separator)


def two_sided_groups(counts: pd.DataFrame) -> int:
    """How many groups of counts per (group_id, label, split) (every row of a group) are on two sides."""
    return int((counts.groupby("group_id")["split"].nunique() > 1).sum())


def split_report_from_totals(totals: pd.DataFrame, two_sided: int, params: SplitParams, separator: str | None = None) -> dict:
    """`split_report` from records counted per (label, split) and the number of groups on two sides."""
    counts = totals
    labelled = counts.assign(label=counts["label"].str.split(separator)).explode("label") if separator else counts
    table = labelled.pivot_table(index="label", columns="split", values="n", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=list(SPLITS), fill_value=0).sort_index()
    per_class = {
        str(label): {s: int(row[s]) for s in SPLITS} | {f"{s}_fraction": round(row[s] / max(1, row.sum()), 4) for s in SPLITS}
        for label, row in table.iterrows()
    }
    per_split = counts.groupby("split")["n"].sum()
    return {
        "counts": {s: int(per_split.get(s, 0)) for s in SPLITS},
        "target": {s: getattr(params, s) for s in SPLITS},
        "per_class": per_class,
        "groups_on_two_sides": two_sided,
    }
