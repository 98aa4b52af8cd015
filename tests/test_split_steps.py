"""Unit tests for pipeline.steps.split: group-safe stratified splits, source splits, the report."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import text_records
from pipeline.errors import SplitError
from pipeline.params import SplitParams
from pipeline.steps.split import SPLITS, source_split_plan, split_report, stratified_group_split


def _classes(sizes: dict[str, int], *, group_size: int = 1) -> pd.DataFrame:
    """Records with `sizes[label]` rows per label, in groups of `group_size` consecutive rows of one label."""
    rows = [(label, f"{label} text {i}") for label, n in sizes.items() for i in range(n)]
    groups = [f"{label}-g{i // group_size}" for label, n in sizes.items() for i in range(n)]
    return text_records(rows, group_ids=groups)


def _by_id(records: pd.DataFrame, assignment: pd.Series) -> dict[str, str]:
    return dict(zip(records["id"], assignment.loc[records.index]))


def test_no_group_on_two_sides():
    """Every record of a group lands in the same split."""
    records = _classes({"a": 90, "b": 60}, group_size=3)
    plan = stratified_group_split(records, SplitParams(), seed=1)
    sides = records.assign(split=plan.assignment).groupby("group_id")["split"].nunique()
    assert (sides == 1).all()
    assert plan.assignment.isin(SPLITS).all()


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.0, 0.3)])
def test_per_class_counts_within_one_of_target(ratios):
    """With single-record groups each class gets ratio * n records per split, give or take one."""
    sizes = {"a": 100, "b": 37, "c": 11}
    params = SplitParams(train=ratios[0], val=ratios[1], test=ratios[2])
    records = _classes(sizes)
    plan = stratified_group_split(records, params, seed=7)
    table = pd.crosstab(records["label"], plan.assignment).reindex(columns=list(SPLITS), fill_value=0)
    for label, n in sizes.items():
        for split, ratio in zip(SPLITS, ratios):
            assert abs(table.loc[label, split] - ratio * n) <= 1, (label, split, table.loc[label].to_dict())


def test_tiny_class_appears_in_every_nonzero_split():
    """A class of three records still puts one in train, val and test."""
    records = _classes({"big": 50, "tiny": 3})
    plan = stratified_group_split(records, SplitParams(), seed=0)
    tiny = plan.assignment[records["label"] == "tiny"]
    assert sorted(tiny) == ["test", "train", "val"]


def test_tiny_class_skips_only_zero_ratio_split():
    """With val at 0, a two-record class goes to train and test and nothing to val."""
    records = _classes({"big": 20, "tiny": 2})
    plan = stratified_group_split(records, SplitParams(train=0.8, val=0.0, test=0.2), seed=0)
    assert sorted(plan.assignment[records["label"] == "tiny"]) == ["test", "train"]
    assert not (plan.assignment == "val").any()


def test_too_few_groups_fails_naming_the_class():
    """Under small_class='fail', a class with fewer groups than splits raises SplitError naming it."""
    records = _classes({"big": 30, "rare": 2})
    with pytest.raises(SplitError, match="'rare'"):
        stratified_group_split(records, SplitParams(small_class="fail"), seed=0)


def test_too_few_groups_goes_to_train_only():
    """Under small_class='train_only', the small class is all in train and listed."""
    records = _classes({"big": 30, "rare": 4}, group_size=2)  # rare: 2 groups
    plan = stratified_group_split(records, SplitParams(small_class="train_only"), seed=0)
    assert plan.train_only_classes == ["rare"]
    assert set(plan.assignment[records["label"] == "rare"]) == {"train"}
    assert set(plan.assignment[records["label"] == "big"]) == set(SPLITS)


def test_result_does_not_depend_on_row_order():
    """Shuffling the input rows gives every record the same split."""
    records = _classes({"a": 40, "b": 25, "c": 9}, group_size=2)
    params = SplitParams()
    first = _by_id(records, stratified_group_split(records, params, seed=3).assignment)
    shuffled = records.sample(frac=1.0, random_state=11)
    again = _by_id(shuffled, stratified_group_split(shuffled, params, seed=3).assignment)
    assert again == first
    reset = shuffled.reset_index(drop=True)
    assert _by_id(reset, stratified_group_split(reset, params, seed=3).assignment) == first


def test_different_seed_changes_assignment():
    """Another seed picks other groups for val and test."""
    records = _classes({"a": 40, "b": 25})
    one = stratified_group_split(records, SplitParams(), seed=1).assignment
    two = stratified_group_split(records, SplitParams(), seed=2).assignment
    assert not one.equals(two)


def test_group_label_is_the_majority_label():
    """A group with mixed labels is stratified by its majority label, and stays whole."""
    records = _classes({"a": 30, "b": 30}, group_size=3)
    records.loc[records.index[0], "label"] = "b"  # group a-g0 is now 2 a + 1 b
    plan = stratified_group_split(records, SplitParams(), seed=5)
    assert records.assign(split=plan.assignment).groupby("group_id")["split"].nunique().max() == 1


# --- source splits ----------------------------------------------------------------------------

def _with_source_split(names: list[str], labels: list[str] | None = None) -> pd.DataFrame:
    labels = labels or [("a", "b")[i % 2] for i in range(len(names))]
    records = text_records([(lab, f"text {i}") for i, lab in enumerate(labels)])
    records["source_split"] = names
    return records


def test_source_split_kept_when_train_val_test_present():
    """A source with train/val/test (any alias, any case) keeps exactly that split."""
    names = ["train"] * 10 + ["Validation"] * 4 + ["TEST"] * 4 + ["dev"] * 2
    records = _with_source_split(names)
    plan = source_split_plan(records, SplitParams(), seed=0)
    expected = ["train"] * 10 + ["val"] * 4 + ["test"] * 4 + ["val"] * 2
    assert list(plan.assignment) == expected


def test_source_val_becomes_test_and_val_is_carved_from_train():
    """train/val only: the source val is the test set, and a new val comes out of the source train."""
    names = ["train"] * 40 + ["val"] * 10
    records = _with_source_split(names)
    plan = source_split_plan(records, SplitParams(train=0.8, val=0.1, test=0.1), seed=0)
    source_val = records["source_split"] == "val"
    assert set(plan.assignment[source_val]) == {"test"}
    carved = plan.assignment[~source_val]
    assert set(carved) == {"train", "val"}
    for label in ("a", "b"):
        assert (carved[records["label"] == label] == "val").sum() == 2  # 10% of 20


def test_source_train_test_only_gets_carved_val():
    """train/test only: test stays, val is carved from train."""
    names = ["train"] * 20 + ["test"] * 6
    records = _with_source_split(names)
    plan = source_split_plan(records, SplitParams(), seed=0)
    assert set(plan.assignment[records["source_split"] == "test"]) == {"test"}
    assert set(plan.assignment[records["source_split"] == "train"]) == {"train", "val"}


def test_unknown_source_split_names_are_rejected():
    """An unrecognised split name raises SplitError naming it."""
    records = _with_source_split(["train", "train", "holdout", "test"])
    with pytest.raises(SplitError, match="holdout"):
        source_split_plan(records, SplitParams(), seed=0)


def test_source_with_train_only_gets_val_and_test_carved():
    """train only: val and test are both carved from it by the configured ratios, never left empty."""
    records = _with_source_split(["train"] * 40)
    plan = source_split_plan(records, SplitParams(train=0.8, val=0.1, test=0.1), seed=0)
    for label in ("a", "b"):
        counts = plan.assignment[records["label"] == label].value_counts()
        assert (counts["train"], counts["val"], counts["test"]) == (16, 2, 2)


@pytest.mark.parametrize("names, message", [
    (["train", None, "test", "train"], "no source split"),
    (["val", "test", "val", "test"], "no train split"),
])
def test_missing_source_split_values_are_named_clearly(names, message):
    """A record without a split name, or a source without train, gets a message saying so."""
    with pytest.raises(SplitError, match=message):
        source_split_plan(_with_source_split(names), SplitParams(), seed=0)


# --- report ---------------------------------------------------------------------------------

def test_split_report_counts_and_fractions():
    """The report counts records per split and class, with per-class fractions and targets."""
    records = text_records([("a", "1"), ("a", "2"), ("a", "3"), ("a", "4"), ("b", "5"), ("b", "6")])
    assignment = pd.Series(["train", "train", "val", "test", "train", "test"], index=records.index)
    report = split_report(records, assignment, SplitParams())
    assert report["counts"] == {"train": 3, "val": 1, "test": 2}
    assert report["target"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert report["per_class"]["a"] | {} == {
        "train": 2, "val": 1, "test": 1, "train_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25,
    }
    assert report["per_class"]["b"]["val"] == 0
    assert report["groups_on_two_sides"] == 0


def test_split_report_counts_groups_on_two_sides():
    """A group whose records are in two splits is counted once."""
    records = text_records([("a", str(i)) for i in range(6)], group_ids=["g1", "g1", "g2", "g2", "g3", "g3"])
    assignment = pd.Series(["train", "test", "val", "test", "train", "train"], index=records.index)
    assert split_report(records, assignment, SplitParams())["groups_on_two_sides"] == 2


# --- multi-label ----------------------------------------------------------------------------

def test_iterative_stratification_keeps_every_label_near_its_ratio_and_groups_whole():
    import numpy as np

    from pipeline.steps.split import iterative_group_split

    rng = np.random.default_rng(0)
    names = ["sports", "politics", "tech", "health", "rare"]
    weights = np.array([0.5, 0.4, 0.3, 0.2, 0.04])
    rows = []
    for i in range(600):
        chosen = [n for n, w in zip(names, weights) if rng.random() < w] or ["tech"]
        rows.append(("|".join(sorted(chosen)), f"doc {i}"))
    groups = [f"g{i // 2}" for i in range(600)]  # pairs of records share a group
    records = text_records(rows, group_ids=groups)
    plan = iterative_group_split(records, SplitParams(), seed=3, separator="|")
    assert plan.assignment.notna().all()
    assert records.assign(split=plan.assignment).groupby("group_id")["split"].nunique().max() == 1
    exploded = records.assign(split=plan.assignment, label=records["label"].str.split("|")).explode("label")
    for label, rows_of_label in exploded.groupby("label"):
        shares = rows_of_label["split"].value_counts(normalize=True)
        assert abs(shares.get("train", 0) - 0.8) < 0.06, label
        assert shares.get("test", 0) > 0 and shares.get("val", 0) > 0, label


def test_iterative_split_does_not_depend_on_row_order():
    from pipeline.steps.split import iterative_group_split

    rows = [("a|b", "x0"), ("a", "x1"), ("b", "x2"), ("a|c", "x3"), ("c", "x4"), ("b|c", "x5")] * 6
    records = text_records([(label, f"{text}-{i}") for i, (label, text) in enumerate(rows)])
    plan = iterative_group_split(records, SplitParams(), seed=1, separator="|")
    shuffled = records.sample(frac=1.0, random_state=0)
    again = iterative_group_split(shuffled, SplitParams(), seed=1, separator="|")
    assert again.assignment.sort_index().equals(plan.assignment.sort_index())


def test_split_stage_reports_multi_label_shares_per_label(tmp_path):
    import json

    from conftest import write_params
    from pipeline.io import write_records
    from pipeline.stages import split

    rows = [("a|b" if i % 3 == 0 else ("a" if i % 3 == 1 else "b"), f"text {i}") for i in range(90)]
    write_records(text_records(rows), tmp_path / "dedup.parquet")
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "x", "format": "tsv", "multi_label": True}})
    code = split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                       "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                       "--metrics", str(tmp_path / "m.json")])
    assert code == 0
    per_class = json.loads((tmp_path / "m.json").read_text())["per_class"]
    assert set(per_class) == {"a", "b"} and abs(per_class["a"]["train_fraction"] - 0.8) < 0.05


@pytest.mark.parametrize("small_class", ["train_only", "fail"])
def test_counting_single_record_groups_gives_the_split_of_listing_them(small_class):
    """The partitioned split lists groups of two or more and only counts single-record groups per
    class, ranking them where their bucket of the seed's order meets: every group lands where the
    whole-table plan puts it."""
    import numpy as np

    from pipeline.steps.order import bucket_of
    from pipeline.steps.split import _stratify, single_ranks, sized_groups, stratify_groups

    rng = np.random.default_rng(5)
    sizes = np.where(rng.random(3_000) < 0.1, rng.integers(2, 6, 3_000), 1)
    labels = rng.choice(["a", "b", "c"], 3_000, p=[0.6, 0.38, 0.02])
    counts = pd.DataFrame({"group_id": [f"{i:016x}" for i in rng.choice(2**60, 3_000, replace=False)], "label": labels,
                           "source_split": None, "n": sizes}).sort_values("group_id", ignore_index=True)
    counts.loc[counts["label"] == "c", "n"] = 1
    if small_class == "train_only":  # class c keeps two single-record groups: too few for three splits
        counts = counts[(counts["label"] != "c") | (counts.index.isin(counts.index[counts["label"] == "c"][:2]))]
    ratios = {"train": 0.8, "val": 0.1, "test": 0.1}
    whole, whole_train_only = _stratify(counts, ratios, seed=3, small_class=small_class)

    groups = sized_groups(counts, seed=3)
    alone = groups[groups["size"] == 1]
    multi = groups[groups["size"] > 1].reset_index(drop=True)
    where, schedules, train_only = stratify_groups(multi, alone["label"].value_counts().to_dict(), ratios, small_class)
    rows = pd.DataFrame({"label": alone["label"], "bucket": bucket_of(alone["order"]),
                         "order": alone["order"], "group_id": alone["group_id"]})
    per_bucket = rows.groupby(["label", "bucket"]).size().rename("n").reset_index()
    starts = {(l, b): int(s) for l, b, s in zip(per_bucket["label"], per_bucket["bucket"],
                                                 per_bucket.groupby("label")["n"].cumsum() - per_bucket["n"])}
    pieces = [single_ranks(part.sort_values(["label", "bucket", "order", "group_id"]), starts, schedules)
              for _, part in rows.groupby(rows["bucket"] % 7)]  # any cut that keeps each bucket whole
    ranked = pd.concat(pieces)
    assert {**where, **dict(zip(ranked["group_id"], ranked["split"]))} == whole
    assert train_only == whole_train_only == (["c"] if small_class == "train_only" else [])
    assert len(whole) == len(counts) and set(whole.values()) == set(SPLITS)


@pytest.mark.parametrize("shipped, partition_rows", [(("train", "test"), 37), (("train", "test"), 100_000), (("train", "dev"), 53),
                                                     (("train", "validation", "test"), 61)])
def test_a_kept_source_split_from_counts_is_the_whole_table_plan(tmp_path, shipped, partition_rows):
    """The stage carves what a shipped split lacks out of its train part from counts (groups of two
    or more train records gathered, the rest counted), in partitions: every record lands where the
    whole-table plan puts it. Among the groups, some span the source's splits with one train record
    and are named after a record of another split."""
    import numpy as np

    from conftest import write_params
    from pipeline.io import read_records, write_records
    from pipeline.stages import split

    rng = np.random.default_rng(7)
    n = 400
    labels = rng.choice(["a", "b", "c"], n, p=[0.6, 0.37, 0.03]).tolist()
    records = text_records([(label, f"message {i} of kind {label}") for i, label in enumerate(labels)])
    names = rng.choice(list(shipped), n, p=[0.7] + [0.3 / (len(shipped) - 1)] * (len(shipped) - 1))
    groups = records["id"].to_numpy(object).copy()
    order = rng.permutation(n)
    for start in range(0, 120, 3):  # groups of three; whichever split each record is in
        members = order[start:start + 3]
        groups[members] = min(records["id"].iloc[members])
    records = records.assign(group_id=groups, source_split=names)
    spans = records.groupby("group_id").filter(lambda g: (g["source_split"] == "train").sum() == 1 and len(g) > 1)
    assert (spans["group_id"] != spans["id"]).any()  # some single-train-record groups are named after another record
    write_records(records, tmp_path / "dedup.parquet")
    datasets = {"t": {"modality": "text", "source": "x.tsv", "format": "tsv", "source_split": "keep", "columns": {"split": "split"}}}
    params = write_params(tmp_path / "params.yaml", datasets, engine={"partition_rows": partition_rows}, seed=11)
    assert split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                       "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                       "--metrics", str(tmp_path / "m.json")]) == 0
    got = {i: s for s in SPLITS for i in read_records(tmp_path / "split" / f"{s}.parquet")["id"]}
    want = source_split_plan(records, SplitParams(), seed=11).assignment
    assert got == dict(zip(records["id"], want))
    assert set(got.values()) == set(SPLITS)


def test_dealing_single_records_in_runs_gives_the_one_at_a_time_splits():
    """Single-record groups of one label set are dealt a run at a time where one split lacks the
    label by more than one record; the codes are those of dealing them one at a time."""
    import numpy as np

    from pipeline.steps.split import _deal

    def one_at_a_time(n, lacking, room, codes):
        lacking, room, out = list(lacking), list(room), []
        for _ in range(n):
            best = max(range(len(codes)), key=lambda i: (lacking[i], room[i], -codes[i]))
            out.append(codes[best])
            lacking[best] -= 1
            room[best] -= 1
        return out

    rng = np.random.default_rng(2)
    for _ in range(300):
        k = int(rng.integers(1, 4))
        codes = sorted(rng.choice(3, k, replace=False).tolist())
        lacking = np.round(rng.uniform(-5, 60, k), int(rng.integers(0, 3))).tolist()  # ties and fractions
        room = rng.integers(0, 80, k).astype(float).tolist()
        n = int(rng.integers(0, 120))
        assert _deal(n, lacking, room, codes).tolist() == one_at_a_time(n, lacking, room, codes)


def _multi_label_records(n: int, seed: int) -> pd.DataFrame:
    """Records of label sets over five labels (one rare), a third of them in groups of two to four
    that share their first record's label set (as near duplicates do)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    names, weights = ["health", "politics", "rare", "sports", "tech"], [0.2, 0.4, 0.04, 0.5, 0.3]
    sets = np.array(["|".join(n for n, w in zip(names, weights) if rng.random() < w) or "tech" for _ in range(n)], dtype=object)
    groups = np.array([None] * n, dtype=object)
    order, start = rng.permutation(n), 0
    while start < n // 3:
        members = order[start:start + int(rng.integers(2, 5))]
        sets[members], groups[members] = sets[members[0]], min(members)
        start += len(members)
    records = text_records([(s, f"doc {i} about {s}") for i, s in enumerate(sets)])
    ids = records["id"].to_numpy(object)
    return records.assign(group_id=[ids[g] if g is not None else i for g, i in zip(groups, ids)])


@pytest.mark.parametrize("partition_rows", [29, 100_000])
def test_multi_label_split_from_counts_is_the_whole_table_plan(tmp_path, partition_rows):
    """The stage splits a multi-label set from counts (groups of two or more gathered, single
    records counted per label set and ranked where their bucket meets), in partitions: every
    record lands where the whole-table iterative plan puts it, groups whole, every label near 80%
    in train."""
    from conftest import write_params
    from pipeline.io import read_records, write_records
    from pipeline.stages import split
    from pipeline.steps.split import iterative_group_split

    records = _multi_label_records(600, seed=4)
    write_records(records, tmp_path / "dedup.parquet")
    datasets = {"t": {"modality": "text", "source": "x.tsv", "format": "tsv", "multi_label": True}}
    params = write_params(tmp_path / "params.yaml", datasets, engine={"partition_rows": partition_rows}, seed=11)
    assert split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                       "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                       "--metrics", str(tmp_path / "m.json")]) == 0
    got = {i: s for s in SPLITS for i in read_records(tmp_path / "split" / f"{s}.parquet")["id"]}
    want = iterative_group_split(records, SplitParams(), seed=11, separator="|").assignment
    assert got == dict(zip(records["id"], want))
    assert records.assign(split=want).groupby("group_id")["split"].nunique().max() == 1
    exploded = records.assign(split=want, label=records["label"].str.split("|")).explode("label")
    for label, rows in exploded.groupby("label"):
        shares = rows["split"].value_counts(normalize=True)
        assert abs(shares.get("train", 0) - 0.8) < 0.06 and shares.get("val", 0) > 0 and shares.get("test", 0) > 0, label


def test_multi_label_source_split_is_kept_and_what_it_lacks_is_carved(tmp_path):
    """With source_split keep, a multi-label set keeps its shipped test records in test and carves
    val out of its train part by iterative stratification (it used to ignore the source's split)."""
    import numpy as np

    from conftest import write_params
    from pipeline.io import read_records, write_records
    from pipeline.stages import split
    from pipeline.steps.split import source_split_plan

    records = _multi_label_records(500, seed=6)
    records = records.assign(source_split=np.where(np.random.default_rng(1).random(len(records)) < 0.75, "train", "test"))
    records.loc[records["group_id"].duplicated(keep=False), "source_split"] = "train"  # no group spans the shipped split
    write_records(records, tmp_path / "dedup.parquet")
    datasets = {"t": {"modality": "text", "source": "x.tsv", "format": "tsv", "multi_label": True, "source_split": "keep",
                      "columns": {"split": "split"}}}
    params = write_params(tmp_path / "params.yaml", datasets, engine={"partition_rows": 41}, seed=11)
    assert split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                       "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                       "--metrics", str(tmp_path / "m.json")]) == 0
    got = {i: s for s in SPLITS for i in read_records(tmp_path / "split" / f"{s}.parquet")["id"]}
    want = dict(zip(records["id"], source_split_plan(records, SplitParams(), seed=11, separator="|").assignment))
    assert got == want
    shipped = dict(zip(records["id"], records["source_split"]))
    assert all(got[i] == "test" for i, s in shipped.items() if s == "test")
    carved = [got[i] for i, s in shipped.items() if s == "train"]
    assert 0.08 < carved.count("val") / len(carved) < 0.16 and "test" not in carved


@pytest.mark.parametrize("labels, says", [(["a"] * 30, "train holds one class ('a': 24)"), ([], "train holds no record")])
def test_split_warns_when_train_cannot_teach_a_classifier(tmp_path, caplog, labels, says):
    """Fewer than two classes left after clean and dedup: the split is still written (the corpus
    may serve another purpose), with a warning naming the counts, before finetune stops on it."""
    import logging

    from conftest import write_params
    from pipeline.io import write_records
    from pipeline.stages import split

    write_records(text_records([(label, f"text {i}") for i, label in enumerate(labels)]), tmp_path / "dedup.parquet")
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "x.tsv", "format": "tsv"}})
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                           "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                           "--metrics", str(tmp_path / "m.json")]) == 0
    assert f"split@t: {says} after the earlier stages; a classifier needs at least two classes" in caplog.text
