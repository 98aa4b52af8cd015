"""Dedup: merge exact duplicates, then verified near duplicates, and group what stays similar.

Every merged record names its survivor in the ledger (near duplicates also their closest partner
and similarity); label conflicts follow params `dedup.conflicts` and are counted in the metrics.
A looser near-duplicate threshold fills `group_id`, which split keeps on one side.

The work is global but nothing is gathered in one place: each record's signature is computed once,
in its partition; exact duplicates meet in a shuffle on their exact key; near-duplicate candidates
in a shuffle on their LSH band hash (texts) or their hash chunks (images); candidate pairs are
verified where their records' signatures are; clusters are the connected components of the
verified pairs (`pipeline.engines.components`), resolved in a shuffle on the cluster.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.engines import Engine, Partitioned, open_engine
from pipeline.engines.components import components
from pipeline.io import record_count
from pipeline.ledger import FATES_SCHEMA
from pipeline.params import DedupParams
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps import candidates, dedup
from pipeline.steps.neardup import NearDupSettings

KEYS = pa.schema([("key", pa.uint64())])
INFO = [("key", pa.uint64()), ("id", pa.string()), ("label", pa.string()), ("size", pa.int64()), ("exact", pa.string())]
SIGNATURES = {
    "text": pa.schema([*INFO, ("minhash", pa.binary()), ("shingles", pa.binary())]),
    "image": pa.schema([*INFO, ("phash", pa.uint64())]),
}
PAIRS = pa.schema([("a", pa.uint64()), ("b", pa.uint64())])
VERIFIED = {"text": pa.schema([*PAIRS, ("similarity", pa.float64())]), "image": pa.schema([*PAIRS, ("distance", pa.int64())])}
MEMBERS = pa.schema([("cluster", pa.uint64()), ("key", pa.uint64()), ("id", pa.string()), ("label", pa.string()),
                     ("size", pa.int64()), ("detail", pa.string())])
CLOSEST = pa.schema([("key", pa.uint64()), ("detail", pa.string())])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from normalise")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")


def run(ctx: Context) -> Outcome:
    engine, params, modality = ctx.engine, ctx.params.dedup, ctx.dataset.modality
    records = engine.read_records(ctx.args.input, modality=modality)
    signed = engine.materialize(engine.map(records, functools.partial(dedup.signatures, modality=modality, params=params),
                                           meta=_empty(SIGNATURES[modality])), schema=SIGNATURES[modality], key="key")
    exact_removed, exact_fates, exact_counts = _exact(engine, signed, params)
    survivors = _without(engine, signed, exact_removed, SIGNATURES[modality])
    near_counts, removed, fates = {}, [exact_removed], exact_fates
    if params.near:
        near_removed, near_fates, near_counts = _near(engine, survivors, modality, params)
        fates = [*_follow(engine, exact_fates, near_fates, survivors), *near_fates]
        removed.append(near_removed)
        survivors = _without(engine, survivors, near_removed, SIGNATURES[modality])
    ctx.ledger.record_spills(fates)
    groups = components(engine, _pairs(engine, survivors, modality, params, loose=True))
    kept = engine.zip(dedup.final_records, records, *_routed(engine, [engine.concat(removed), groups], signed),
                      meta=records.frame._meta)
    n_out = engine.write_records(kept, ctx.args.output)
    n_in = record_count(ctx.args.input)
    extra = {
        "clusters": exact_counts["clusters"], "near_clusters": near_counts.get("clusters", 0),
        "label_conflicts": exact_counts["conflicts"] + near_counts.get("conflicts", 0),
        "duplicate_rate": round(1 - n_out / n_in, 6) if n_in else 0.0,
        "groups_of_similar_records": len(engine.value_counts(groups, "root")),
        "records_in_groups": engine.count(groups),
        "labels": engine.value_counts(engine.read_records(ctx.args.output, modality=modality, columns=["label"]), "label"),
    }
    return Outcome(n_in, n_out, extra)


def _exact(engine: Engine, signed: Partitioned, params: DedupParams):
    """Exact duplicates: records with equal exact keys meet in a shuffle and are resolved there."""
    rows = engine.group(engine.columns(signed, [name for name, _ in INFO]), ["exact"], _identity, order=["exact", "key"],
                        meta=_empty(pa.schema(INFO)))
    return engine.process(rows, functools.partial(dedup.exact_clusters, params=params), schema=KEYS)


def _near(engine: Engine, survivors: Partitioned, modality: str, params: DedupParams):
    """Near duplicates among the survivors: verified pairs, their components, resolved per cluster."""
    verified = _pairs(engine, survivors, modality, params, loose=False)
    labels = components(engine, verified)
    partners = engine.map(verified, functools.partial(dedup.partner_rows, modality=modality),
                          meta=dedup.partner_rows(_empty(VERIFIED[modality]), modality))
    closest = engine.group(partners, ["node"], dedup.closest_partners, order=["node", "rank", "a", "b"], meta=_empty(CLOSEST))
    info = engine.columns(survivors, ["key", "id", "label", "size"])
    members = engine.zip(dedup.cluster_members, info, *_routed(engine, [labels, closest], survivors), meta=_empty(MEMBERS))
    grouped = engine.group(members, ["cluster"], _identity, order=["cluster", "key"], meta=_empty(MEMBERS))
    return engine.process(grouped, functools.partial(dedup.resolve_members, params=params, reason="near_duplicate"), schema=KEYS)


def _follow(engine: Engine, earlier: list[Path], later: list[Path], survivors: Partitioned) -> list[Path]:
    """The earlier fates, with merges into a record that merged later re-pointed at its survivor."""
    targets = engine.map(engine.read_fates(earlier), dedup.merged_targets, meta=dedup.merged_targets(_empty(FATES_SCHEMA)))
    onward = engine.map(engine.read_fates(later), dedup.merged_keys, meta=dedup.merged_keys(_empty(FATES_SCHEMA)))
    moved = engine.zip(dedup.repoint, engine.route(targets, "target", onto=survivors), engine.route(onward, "key", onto=survivors),
                       meta=_empty(FATES_SCHEMA))
    return list(engine.materialize(moved, schema=FATES_SCHEMA).paths)


def _pairs(engine: Engine, signed: Partitioned, modality: str, params: DedupParams, *, loose: bool) -> Partitioned:
    """Verified near-duplicate pairs (`a` < `b`) among `signed`, at the merge or the group threshold."""
    if modality == "image":
        distance = params.image.group_max_distance if loose else params.image.max_distance
        rows = engine.map(engine.columns(signed, ["key", "phash"]), functools.partial(candidates.chunk_rows, max_distance=distance),
                          meta=candidates.chunk_rows(_empty(SIGNATURES["image"]), distance))
        pairs = engine.group(rows, ["chunk", "value"], functools.partial(candidates.chunk_pairs, max_distance=distance),
                             order=["chunk", "value", "key"], meta=_empty(VERIFIED["image"]))
        return engine.materialize(pairs, schema=VERIFIED["image"])
    settings = NearDupSettings.from_params(params.text, loose=loose)
    minhash = engine.columns(signed, ["key", "minhash"])
    rows = engine.map(minhash, functools.partial(candidates.band_rows, settings=settings),
                      meta=candidates.band_rows(_empty(SIGNATURES["text"]), settings))
    found = engine.group(rows, ["band", "bucket"], candidates.bucket_pairs, order=["band", "bucket", "key"], meta=_empty(PAIRS))
    unique = engine.group(found, ["a", "b"], _unique, order=["a", "b"], meta=_empty(PAIRS))
    if settings.screen is not None:
        sketches = engine.map(minhash, functools.partial(candidates.sketches, settings=settings),
                              meta=candidates.sketches(_empty(SIGNATURES["text"]), settings))
        unique = _attach(engine, _attach(engine, unique, "a", sketches, signed), "b", sketches, signed)
        unique = engine.map(unique, functools.partial(candidates.screen_pairs, settings=settings), meta=_empty(PAIRS))
    evidence = engine.columns(signed, ["key", "shingles" if settings.verify == "exact" else "minhash"])
    both = _attach(engine, _attach(engine, unique, "a", evidence, signed), "b", evidence, signed)
    verified = engine.map(both, functools.partial(candidates.jaccard_pairs, settings=settings), meta=_empty(VERIFIED["text"]))
    return engine.materialize(verified, schema=VERIFIED["text"])


def _attach(engine: Engine, pairs: Partitioned, end: str, table: Partitioned, onto: Partitioned) -> Partitioned:
    """`pairs` with the columns of `table` (partitioned as `onto`) for their `end` record, suffixed `_a`/`_b`."""
    routed = engine.route(pairs, end, onto=onto)
    return engine.zip(functools.partial(_join, end=end), routed, table, meta=_join(pairs.frame._meta, table.frame._meta, end=end))


def _join(pairs: pd.DataFrame, table: pd.DataFrame, *, end: str) -> pd.DataFrame:
    renamed = table.rename(columns={c: f"{c}_{end}" for c in table.columns if c != "key"}).rename(columns={"key": end})
    return pairs.merge(renamed, on=end, how="inner")


def _without(engine: Engine, table: Partitioned, removed: Partitioned, schema: pa.Schema) -> Partitioned:
    """The rows of a materialized `table` whose key is not in `removed`, materialized the same way."""
    kept = engine.zip(dedup.without, table, engine.route(removed, "key", onto=table), meta=table.frame._meta)
    return engine.materialize(kept, schema=schema, key="key")


def _routed(engine: Engine, tables: list[Partitioned], onto: Partitioned) -> list[Partitioned]:
    return [engine.route(t, "key", onto=onto) for t in tables]


def _identity(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _unique(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs.drop_duplicates(ignore_index=True)


def _empty(schema: pa.Schema) -> pd.DataFrame:
    return schema.empty_table().to_pandas()


def main(argv: list[str] | None = None) -> int:
    return stage_main("dedup", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
