"""Dedup: merge exact duplicates, then verified near duplicates, and group what stays similar.

Every merged record names its survivor in the ledger (near duplicates also their closest partner
and similarity); label conflicts follow params `dedup.conflicts` and are counted in the metrics.
A looser near-duplicate threshold fills `group_id`, which split keeps on one side.

The work is global but nothing is gathered in one place: each record's signature is computed once,
in its partition; exact duplicates meet in a shuffle on their exact key; near-duplicate candidates
in a shuffle on their LSH band hash (texts) or their hash chunks (images); candidate pairs are
verified where their records' signatures are; clusters are the connected components of the
verified pairs (`pipeline.engines.components`), resolved in a shuffle on the cluster.

Last, the survivors are decontaminated against the evaluation sets of params `decontaminate`
(`pipeline.steps.decontaminate`): each copy of an evaluation record is dropped with the reason
`contaminates:<set>`, counted per set under `decontaminated`.
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.engines import Engine, Partitioned, neighbours, open_engine
from pipeline.engines.components import components
from pipeline.engines.neighbours import VERIFIED, empty
from pipeline.errors import StageError, UserError
from pipeline.io import record_count
from pipeline.ledger import FATES_SCHEMA
from pipeline.params import DatasetParams, DedupParams
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps import dedup
from pipeline.steps.clean import clean_partition
from pipeline.steps.decontaminate import REASON, build_reference, decontaminate_partition
from pipeline.steps.neardup import NearDupSettings
from pipeline.steps.normalise import normalise_partition

KEYS = pa.schema([("key", pa.uint64())])
MEMBERS = pa.schema([("cluster", pa.uint64()), ("key", pa.uint64()), ("id", pa.string()), ("label", pa.string()),
                     ("size", pa.int64()), ("detail", pa.string())])
CLOSEST = pa.schema([("key", pa.uint64()), ("detail", pa.string())])
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from normalise")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")
    parser.add_argument("--root", default=Path("."), type=Path, help="folder the evaluation sets' sources are relative to")


def run(ctx: Context) -> Outcome:
    engine, params, modality = ctx.engine, ctx.params.dedup, ctx.dataset.modality
    records = engine.read_records(ctx.args.input, modality=modality)
    signed = engine.materialize(engine.map(records, functools.partial(dedup.signatures, modality=modality, params=params),
                                           meta=empty(dedup.SIGNATURES[modality])), schema=dedup.SIGNATURES[modality], key="key")
    exact_removed, exact_fates, exact_counts = _exact(engine, signed, params)
    survivors = _without(engine, signed, exact_removed, dedup.SIGNATURES[modality])
    near_counts, removed, fates = {}, [exact_removed], exact_fates
    if params.near:
        near_removed, near_fates, near_counts = _near(engine, survivors, modality, params)
        fates = [*_follow(engine, exact_fates, near_fates, survivors), *near_fates]
        removed.append(near_removed)
        survivors = _without(engine, survivors, near_removed, dedup.SIGNATURES[modality])
    ctx.ledger.record_spills(fates)
    groups = components(engine, _pairs(engine, survivors, modality, params, loose=True))
    kept = engine.zip(dedup.final_records, records, *_routed(engine, [engine.concat(removed), groups], signed),
                      meta=records.frame._meta)
    kept, contaminated = _decontaminated(ctx, kept)
    n_out = engine.write_records(kept, ctx.args.output)
    n_in = record_count(ctx.args.input)
    extra = {
        "clusters": exact_counts["clusters"], "near_clusters": near_counts.get("clusters", 0),
        "label_conflicts": exact_counts["conflicts"] + near_counts.get("conflicts", 0),
        "duplicate_rate": round(1 - (n_out + sum(contaminated.values())) / n_in, 6) if n_in else 0.0,
        **({"decontaminated": contaminated} if contaminated else {}),  # a count per set of this modality
        "groups_of_similar_records": len(engine.value_counts(groups, "root")),
        "records_in_groups": engine.count(groups),
        "labels": engine.value_counts(engine.read_records(ctx.args.output, modality=modality, columns=["label"]), "label"),
    }
    return Outcome(n_in, n_out, extra)


def _evaluation_sets(ctx: Context) -> dict[str, DatasetParams]:
    """The evaluation sets of this dataset's modality, by name."""
    return {name: s for name, s in sorted(ctx.params.decontaminate.sets.items()) if s.modality == ctx.dataset.modality}


def _decontaminated(ctx: Context, kept: Partitioned) -> tuple[Partitioned, dict[str, int]]:
    """`kept` without the records that copy an evaluation record (each dropped in the ledger), and
    how many copied each set. The sets are cleaned and normalised as the corpus was, then indexed."""
    sets = _evaluation_sets(ctx)
    if not sets:
        return kept, {}
    engine, modality = ctx.engine, ctx.dataset.modality
    evaluation = [(name, _evaluation_records(ctx, name, source)) for name, source in sets.items()]
    settings = NearDupSettings.from_params(ctx.params.dedup.text, seed=0, certify=True) if ctx.params.decontaminate.near else None
    reference = build_reference(evaluation, modality, ctx.params.dedup, settings)
    log.info("decontaminate: %s evaluation records indexed (%s)", len(reference),
             ", ".join(f"{name} {len(records)}" for name, records in evaluation))
    clean_kept, fates, counts = engine.process(kept, functools.partial(decontaminate_partition, reference=reference))
    ctx.ledger.record_spills(fates)
    return clean_kept, {name: counts.get(f"{REASON}:{name}", 0) for name in sets}


def _evaluation_records(ctx: Context, name: str, source: DatasetParams) -> pd.DataFrame:
    """An evaluation set's records as clean and normalise would make them (the unusable left out)."""
    engine = ctx.engine
    try:
        raw, _, _ = engine.read_source(source, ctx.args.root)
    except UserError as exc:
        raise StageError(exc.problem, key=f"decontaminate.sets.{name}.{exc.key}" if exc.key else f"decontaminate.sets.{name}") from exc
    clean_params = ctx.params.clean  # without token bounds: an evaluation record is matched whatever its length
    clean_params = clean_params.model_copy(update={"text": clean_params.text.model_copy(update={"min_tokens": None, "max_tokens": None})})
    cleaned, _, _ = engine.process(raw, functools.partial(clean_partition, dataset=source, params=clean_params))
    normalised, _, _ = engine.process(cleaned, functools.partial(normalise_partition, modality=source.modality,
                                                                 params=ctx.params.normalise))
    return engine.collect(normalised)


def _exact(engine: Engine, signed: Partitioned, params: DedupParams):
    """Exact duplicates: records with equal exact keys meet in a shuffle and are resolved there."""
    rows = engine.group(engine.columns(signed, [name for name, _ in dedup.INFO]), ["exact"], order=["exact", "key"],
                        meta=empty(pa.schema(dedup.INFO)))
    return engine.process(rows, functools.partial(dedup.exact_clusters, params=params), schema=KEYS)


def _near(engine: Engine, survivors: Partitioned, modality: str, params: DedupParams):
    """Near duplicates among the survivors: verified pairs, their components, resolved per cluster."""
    verified = _pairs(engine, survivors, modality, params, loose=False)
    labels = components(engine, verified)
    partners = engine.map(verified, functools.partial(dedup.partner_rows, modality=modality),
                          meta=dedup.partner_rows(empty(VERIFIED[modality]), modality))
    closest = engine.group(partners, ["node"], dedup.closest_partners, order=["node", "rank", "a", "b"], meta=empty(CLOSEST))
    info = engine.columns(survivors, ["key", "id", "label", "size"])
    members = engine.zip(dedup.cluster_members, info, *_routed(engine, [labels, closest], survivors), meta=empty(MEMBERS))
    grouped = engine.group(members, ["cluster"], order=["cluster", "key"], meta=empty(MEMBERS))
    return engine.process(grouped, functools.partial(dedup.resolve_members, params=params, reason="near_duplicate"), schema=KEYS)


def _follow(engine: Engine, earlier: list[Path], later: list[Path], survivors: Partitioned) -> list[Path]:
    """The earlier fates, with merges into a record that merged later re-pointed at its survivor."""
    targets = engine.map(engine.read_fates(earlier), dedup.merged_targets, meta=dedup.merged_targets(empty(FATES_SCHEMA)))
    onward = engine.map(engine.read_fates(later), dedup.merged_keys, meta=dedup.merged_keys(empty(FATES_SCHEMA)))
    moved = engine.zip(dedup.repoint, engine.route(targets, "target", onto=survivors), engine.route(onward, "key", onto=survivors),
                       meta=empty(FATES_SCHEMA))
    return list(engine.materialize(moved, schema=FATES_SCHEMA).paths)


def _pairs(engine: Engine, signed: Partitioned, modality: str, params: DedupParams, *, loose: bool) -> Partitioned:
    """Verified near-duplicate pairs (`a` < `b`) among `signed`, at the merge or the group threshold."""
    if modality == "image":
        return neighbours.image_pairs(engine, signed, params.image.group_max_distance if loose else params.image.max_distance)
    return neighbours.text_pairs(engine, signed, NearDupSettings.from_params(params.text, loose=loose))


def _without(engine: Engine, table: Partitioned, removed: Partitioned, schema: pa.Schema) -> Partitioned:
    """The rows of a materialized `table` whose key is not in `removed`, materialized the same way."""
    kept = engine.zip(dedup.without, table, engine.route(removed, "key", onto=table), meta=table.frame._meta)
    return engine.materialize(kept, schema=schema, key="key")


def _routed(engine: Engine, tables: list[Partitioned], onto: Partitioned) -> list[Partitioned]:
    return [engine.route(t, "key", onto=onto) for t in tables]



def main(argv: list[str] | None = None) -> int:
    return stage_main("dedup", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
