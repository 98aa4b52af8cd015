"""Split: stratified train/val/test by whole groups (or the source's own split, if asked).

Runs before augment and rebalance, so generated records can only ever exist in train. Writes a
leakage certificate, computed from the content independently of the grouping, and fails if any
record has a duplicate across the split (with a source's own split: reports, or drops them).

Partitioned: each partition counts its records per (group, label, source split), and the plan is
made from the sums: groups of two or more records are gathered here (one row per group), single
records only counted per class (or label set) and bucket of the seed's order (`_assigned`). A
source's own split needs its names' totals, and the same counting for what it carves out of its
train part. The plan is applied to every partition. The certificate's exact pairs meet in a shuffle on the
content hash, its near pairs as dedup's do, with their own MinHash seed.
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.engines import Engine, Partitioned, neighbours, open_engine
from pipeline.engines.neighbours import empty
from pipeline.errors import StageError
from pipeline.io import read_features, record_count, write_json
from pipeline.ledger import Fates
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps import dedup
from pipeline.steps.candidates import id_keys
from pipeline.steps.leakage import (Leak, certificate, cross_split_leaks, evaluation_side_ids, exact_cross_pairs, method_text,
                                    semantic_leaks)
from pipeline.steps.neardup import NearDupSettings
from pipeline.steps.order import bucket_of
from pipeline.steps.split import (SPLITS, GroupPlan, SourceLayout, group_counts, group_plan, iterate_groups, single_ranks, sized_groups,
                                  source_layout, source_train_rows, split_report_from_totals, stratify_groups, two_sided_groups)

KEYS = ["group_id", "label", "source_split"]
COUNTS = pa.schema([("group_id", pa.string()), ("label", pa.string()), ("source_split", pa.string()), ("n", pa.int64())])
SIZED = pa.schema([("group_id", pa.string()), ("label", pa.string()), ("size", pa.int64()), ("order", pa.uint64()),
                   ("total", pa.int64())])
SINGLES = pa.schema([("label", pa.string()), ("bucket", pa.int64()), ("order", pa.uint64()), ("group_id", pa.string()), ("n", pa.int64()),
                     ("total", pa.int64())])
RANKED = pa.schema([("key", pa.uint64()), ("group_id", pa.string()), ("split", pa.string()), ("total", pa.int64())])
PER_SOURCE_SPLIT = pa.schema([("source_split", pa.string()), ("n", pa.int64())])
NO_SPLIT = "\x00"  # stands for a record without a source split in the totals (which drop missing keys)
TWO_SIDED = pa.schema([("groups", pa.int64())])
SPLIT_COUNTS = pa.schema([("group_id", pa.string()), ("label", pa.string()), ("split", pa.string()), ("n", pa.int64())])
LEAK_EXTRA = [("split", pa.string()), ("content_hash", pa.string())]
SEMANTIC_METHOD = "cosine of the embed stage's vectors, exact nearest train record of each val/test record"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from dedup")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test record sets")
    parser.add_argument("--leakage", required=True, type=Path, help="where to write the leakage certificate (JSON)")
    parser.add_argument("--embeddings", type=Path, help="the embed stage's vectors of these records, for the "
                                                        "certificate's semantic section (split.semantic_threshold)")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    params = ctx.params.split
    keep_source = ctx.dataset.source_split == "keep"
    separator = ctx.dataset.label_separator if ctx.dataset.multi_label else None
    records = engine.read_records(ctx.args.input, modality=modality)
    counted = engine.map(records, functools.partial(group_counts, keep_source=keep_source), meta=empty(COUNTS))
    if keep_source:
        assigned, train_only = _source_assigned(ctx, records, counted, separator)
    else:
        assigned, train_only = _assigned(ctx, records, counted, separator=separator)
    leaks, dropped = _certify(ctx, assigned, keep_source)
    kept = engine.map(assigned, _without_ids, meta=assigned.frame._meta, ids=np.sort(id_keys(pd.Series(sorted(dropped)))))
    n_out = sum(engine.write_records(engine.map(kept, functools.partial(_only, split=s), meta=records.frame._meta),
                                     ctx.args.output / f"{s}.parquet") for s in SPLITS)
    report = split_report_from_totals(*_final_counts(engine, kept), params, separator)
    if report["groups_on_two_sides"] and not keep_source:
        raise RuntimeError(f"bug: {report['groups_on_two_sides']} groups ended up on two sides of the split")
    extra = {**report, "train_only_classes": train_only, "source_split": keep_source,
             "leakage": {"cross_split_pairs": len(leaks)}}
    _warn_if_unlearnable(ctx.name, report["per_class"])
    return Outcome(record_count(ctx.args.input), n_out, extra)


def _warn_if_unlearnable(dataset: str, per_class: dict[str, dict]) -> None:
    """Say so when fewer than two classes have train records: the data stages go on (the corpus
    may be meant for something else), but finetune and the baselines will stop."""
    trained = {label: counts["train"] for label, counts in per_class.items() if counts["train"]}
    if len(trained) < 2:
        held = ", ".join(f"{label!r}: {n}" for label, n in trained.items()) or "no record"
        log.warning("split@%s: train holds %s after the earlier stages; a classifier needs at least two classes, "
                    "so finetune and the baselines will stop (the earlier stages' ledgers and metrics say where the records went)",
                    dataset, f"one class ({held})" if trained else held)


def _source_assigned(ctx: Context, records: Partitioned, counted: Partitioned,
                     separator: str | None) -> tuple[Partitioned, list[str]]:
    """Every record with its source's split, from the records counted per source split; what the
    source lacks is carved out of its train part as `_assigned` splits a corpus."""
    engine = ctx.engine
    per_split = engine.map(counted, _per_source_split, meta=empty(PER_SOURCE_SPLIT))
    totals = engine.totals(per_split, ["source_split"], "n")
    totals["source_split"] = totals["source_split"].replace({NO_SPLIT: None})
    layout = source_layout(totals, ctx.params.split)
    if not layout.carve:
        plan = group_plan({}, [], source=True, val_is_test=layout.val_is_test)
        return engine.map(records, _with_split, meta=_with_split_meta(records), plan=plan), []
    return _assigned(ctx, records, counted, layout, separator=separator)


def _per_source_split(counts: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"source_split": counts["source_split"].fillna(NO_SPLIT).to_numpy(object), "n": counts["n"].to_numpy(np.int64)})


def _assigned(ctx: Context, records: Partitioned, counted: Partitioned, source: SourceLayout | None = None, *,
              separator: str | None = None) -> tuple[Partitioned, list[str]]:
    """Every record with its split, decided from aggregates: the groups of two or more records are
    gathered (one row per group), single-record groups only counted per class (multi-label: per
    label set) and bucket of their order, then ranked where their bucket meets in a shuffle
    (`single_ranks`).

    With a `source` layout, only the groups' rows from the source's train split are split, by its
    carve ratios. A group with one train record but others in the source's val or test is ranked
    as a single-record group, but its name need not be that record's id, so its split joins the
    plan instead of being routed to the record (such groups are few: they span source splits)."""
    engine, params = ctx.engine, ctx.params.split
    sizes = functools.partial(_group_sizes, seed=ctx.params.seed, source=source is not None, separator=separator)
    sized = engine.materialize(engine.group(counted, ["group_id"], sizes, order=KEYS, meta=empty(SIZED)), schema=SIZED)
    multi = engine.collect(engine.map(sized, _multi, meta=empty(SIZED))).sort_values("group_id", kind="stable")
    singles = engine.map(sized, _bucketed, meta=empty(SINGLES))
    per_bucket = engine.totals(singles, ["label", "bucket"], "n")
    ratios = source.carve if source else {s: getattr(params, s) for s in SPLITS}
    singles_per_label = per_bucket.groupby("label")["n"].sum().to_dict()
    if separator:
        where, schedules, train_only = iterate_groups(multi.reset_index(drop=True), singles_per_label, ratios, separator)
    else:
        where, schedules, train_only = stratify_groups(multi.reset_index(drop=True), singles_per_label, ratios,
                                                       "train_only" if source else params.small_class)
    ranked = engine.map(engine.group(singles, ["label", "bucket"], order=["label", "bucket", "order", "group_id"], meta=empty(SINGLES)),
                        _keyed_ranks, meta=empty(RANKED), starts=_bucket_starts(per_bucket), schedules=schedules)
    if source is not None:  # only a source's split has single-train-record groups whose name is another record's
        ranked = engine.materialize(ranked, schema=RANKED)
        shared = engine.collect(engine.map(ranked, _shared, meta=empty(RANKED)))
        where.update(zip(shared["group_id"], shared["split"]))
        ranked = engine.map(ranked, _own, meta=empty(RANKED))
    bounded = engine.with_bounds(records, ctx.args.input, modality=ctx.dataset.modality)
    plan = group_plan(where, train_only, source=source is not None, val_is_test=bool(source and source.val_is_test))
    routed = engine.materialize(engine.route(ranked, "key", onto=bounded), schema=RANKED)  # read by every later pass
    assigned = engine.zip(functools.partial(_with_splits, plan=plan), bounded, routed, meta=_with_split_meta(records))
    return assigned, train_only


def _group_sizes(rows: pd.DataFrame, seed: int, source: bool, separator: str | None) -> pd.DataFrame:
    """Per group of `rows` (every count row of their groups): its majority label (multi-label: the
    union of its label sets), its size and its place in the seed's order (`sized_groups`), and
    `total`, its records in every source split.
    With `source`, label and size count the source's train rows only (groups with none are left out)."""
    summed = _sum(rows, keys=KEYS)
    total = summed.groupby("group_id", sort=True)["n"].sum()
    counted = summed[source_train_rows(summed)] if source else summed
    sized = sized_groups(counted, seed, separator)
    return sized.assign(total=total.reindex(sized["group_id"]).to_numpy(np.int64))


def _bucket_starts(per_bucket: pd.DataFrame) -> dict[tuple[str, int], int]:
    """Per (label, bucket), how many single-record groups of the label come in earlier buckets."""
    ordered = per_bucket.sort_values(["label", "bucket"], kind="stable")
    before = ordered.groupby("label")["n"].cumsum() - ordered["n"]
    return {(l, int(b)): int(s) for l, b, s in zip(ordered["label"], ordered["bucket"], before)}


def _multi(groups: pd.DataFrame) -> pd.DataFrame:
    return groups[groups["size"] > 1]


def _shared(ranked: pd.DataFrame) -> pd.DataFrame:
    return ranked[ranked["total"] > 1]


def _own(ranked: pd.DataFrame) -> pd.DataFrame:
    return ranked[ranked["total"] == 1]


def _bucketed(groups: pd.DataFrame) -> pd.DataFrame:
    alone = groups[groups["size"] == 1]
    order = alone["order"].to_numpy(np.uint64)
    return pd.DataFrame({"label": alone["label"].to_numpy(object), "bucket": bucket_of(order),
                         "order": order, "group_id": alone["group_id"].to_numpy(object), "n": np.ones(len(alone), np.int64),
                         "total": alone["total"].to_numpy(np.int64)})


def _keyed_ranks(rows: pd.DataFrame, starts: dict, schedules: dict) -> pd.DataFrame:
    ranked = single_ranks(rows, starts, schedules)
    return ranked.assign(key=id_keys(ranked["group_id"]), total=rows["total"].to_numpy(np.int64))[["key", "group_id", "split", "total"]]


def _with_splits(records: pd.DataFrame, singles: pd.DataFrame, plan: GroupPlan) -> pd.DataFrame:
    """Records with the split of their group: from the plan (groups of two or more) or from the
    single-record groups routed here (a single record's group is its own id)."""
    split = plan.assign(records, unplanned=None)
    alone = split.isna().to_numpy()
    split[alone] = records.loc[alone, "group_id"].map(dict(zip(singles["group_id"], singles["split"]))).to_numpy(object)
    if split.isna().any():
        raise RuntimeError(f"bug: {int(split.isna().sum())} record(s) got no split, e.g. {records.loc[split.isna(), 'id'].iloc[0]}")
    return records.assign(split=split.to_numpy(object))


def _with_split_meta(records: Partitioned) -> pd.DataFrame:
    return records.frame._meta.assign(split=pd.Series(dtype=object))


def _final_counts(engine: Engine, kept: Partitioned) -> tuple[pd.DataFrame, int]:
    """Records per (label, split), and how many groups are on two sides (a shuffle on the group)."""
    counts = engine.map(kept, _split_counts, meta=empty(SPLIT_COUNTS))
    totals = engine.totals(counts, ["label", "split"], "n")
    sides = engine.group(counts, ["group_id"], _two_sided, order=["group_id", "label", "split"], meta=empty(TWO_SIDED))
    return totals, int(engine.collect(sides)["groups"].sum())


def _two_sided(counts: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"groups": [two_sided_groups(counts)]}, dtype=np.int64)


def _certify(ctx: Context, assigned: Partitioned, keep_source: bool) -> tuple[list[Leak], set[str]]:
    """Write the leakage certificate; fail on any leak, unless the source's own split is kept
    (then its evaluation-side records are dropped if `split.source_leakage` says so)."""
    engine, modality, params = ctx.engine, ctx.dataset.modality, ctx.params.dedup
    leaks = _leaks(engine, assigned, modality, params, derive_seed(ctx.params.seed, "leakage", bits=32))
    dropped: set[str] = set()
    if keep_source and leaks and ctx.params.split.source_leakage == "drop":
        dropped = evaluation_side_ids(leaks)
        ctx.ledger.record(Fates.dropped(sorted(dropped), "duplicate_across_source_split"))
        leaks = [leak for leak in leaks if leak.id not in dropped and leak.other_id not in dropped]
    checked = _checked(engine, assigned, dropped)
    written = certificate(leaks, method=method_text(modality, params), checked=checked)
    threshold = ctx.params.split.semantic_threshold
    if ctx.args.embeddings is not None and threshold is not None:
        semantic = _semantic(engine, assigned, dropped, ctx.args.embeddings, threshold)
        written["semantic"] = {"threshold": threshold, "method": SEMANTIC_METHOD, "leaks": len(semantic), "pairs": semantic}
    write_json(written, ctx.args.leakage)
    if leaks and not keep_source:
        first = leaks[0]
        raise StageError(
            f"leakage certificate: {len(leaks)} record(s) duplicated across splits, e.g. {first.split} {first.id} "
            f"~ {first.other_split} {first.other_id} ({first.similarity}); see {ctx.args.leakage}"
        )
    return leaks, dropped


def _semantic(engine: Engine, assigned: Partitioned, dropped: set[str], embeddings: Path, threshold: float) -> list[dict]:
    """The semantic section's pairs: each val/test record whose nearest train record reaches `threshold`."""
    meta = pd.DataFrame({"id": pd.Series(dtype=object), "split": pd.Series(dtype=object)})
    sides = engine.collect(engine.map(assigned, _id_and_split, meta=meta))
    sides = sides[~sides["id"].isin(dropped)].sort_values("id", kind="stable")
    vectors = read_features(embeddings, sides["id"])
    return semantic_leaks(sides["id"].to_numpy(object), sides["split"].to_numpy(object), vectors, threshold)


def _id_and_split(records: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": records["id"].to_numpy(object), "split": records["split"].to_numpy(object)})


def _leaks(engine: Engine, assigned: Partitioned, modality: str, params, seed: int) -> list[Leak]:
    """Every pair of records on two sides of the split with equal content or within dedup's merge threshold."""
    schema = pa.schema([*dedup.SIGNATURES[modality], *LEAK_EXTRA])
    signed = engine.materialize(engine.map(assigned, functools.partial(_leak_signatures, modality=modality, params=params, seed=seed),
                                           meta=empty(schema)), schema=schema, key="key")
    ends = engine.columns(signed, ["key", "id", "split"])
    rows = engine.group(engine.columns(signed, ["key", "split", "content_hash"]), ["content_hash"],
                        order=["content_hash", "key"], meta=empty(pa.schema([("key", pa.uint64()), *LEAK_EXTRA])))
    exact = engine.map(rows, exact_cross_pairs, meta=empty(neighbours.PAIRS))
    if modality == "text":
        near = neighbours.text_pairs(engine, signed, NearDupSettings.from_params(params.text, seed=seed, certify=True))
    else:
        near = neighbours.image_pairs(engine, signed, params.image.max_distance)
    both = [neighbours.attach(engine, neighbours.attach(engine, pairs, "a", ends, signed), "b", ends, signed) for pairs in (exact, near)]
    exact_rows, near_rows = (engine.collect(p) for p in both)
    near_rows = near_rows.assign(similarity=[f"jaccard {s:.3f}" for s in near_rows["similarity"]] if modality == "text"
                                 else [f"hamming {d}" for d in near_rows["distance"]])
    return cross_split_leaks(exact_rows, near_rows)


def _checked(engine: Engine, assigned: Partitioned, dropped: set[str]) -> dict[str, int]:
    """Records the certificate covers, per split (the dropped ones are not in any)."""
    counts = engine.value_counts(engine.map(assigned, _without_ids, meta=assigned.frame._meta,
                                            ids=np.sort(id_keys(pd.Series(sorted(dropped))))), "split")
    return {s: counts.get(s, 0) for s in SPLITS}


def _sum(frame: pd.DataFrame, *, keys: list[str]) -> pd.DataFrame:
    return frame.groupby(keys, sort=True, dropna=False)["n"].sum().reset_index()


def _with_split(records: pd.DataFrame, plan: GroupPlan) -> pd.DataFrame:
    return records.assign(split=plan.assign(records).to_numpy(object))


def _without_ids(records: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    return records[~np.isin(id_keys(records["id"]), ids)]


def _only(records: pd.DataFrame, *, split: str) -> pd.DataFrame:
    return records[records["split"] == split].drop(columns="split")


def _split_counts(records: pd.DataFrame) -> pd.DataFrame:
    frame = records[["group_id", "label", "split"]]
    return frame.groupby(["group_id", "label", "split"], sort=True).size().rename("n").reset_index()


def _leak_signatures(records: pd.DataFrame, *, modality: str, params, seed: int) -> pd.DataFrame:
    signed = dedup.signatures(records, modality, params, seed=seed)
    return signed.assign(split=records["split"].to_numpy(object), content_hash=records["content_hash"].to_numpy(object))



def main(argv: list[str] | None = None) -> int:
    return stage_main("split", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
