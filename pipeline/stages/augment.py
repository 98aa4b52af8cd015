"""Augment: add variants of train records (nlpaug for text, albumentations for images), train only.

A variant identical to its parent, or to any record in any split, is dropped and counted: it would
add nothing, or leak. A preview of originals beside their variants is written for people.

On the engine: the plan (how many variants each record gets) comes from class counts; variants are
made partition by partition of train; a shuffle on the content hash meets each variant with every
record and variant of equal content, anywhere in the splits.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pandas as pd

from pipeline.engines import Engine, Partitioned, open_engine
from pipeline.io import empty_records, record_count, write_folder
from pipeline.params import ImageAugmentParams, TextAugmentParams
from pipeline.report.preview import preview_candidates, preview_files
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps import augment as steps

VARIANT_ROWS = empty_records().assign(**{steps.VARIANT_FLAG: pd.Series(dtype=bool)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of train/val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="record set directory for augmented train")
    parser.add_argument("--preview", required=True, type=Path, help="folder for the preview of variants")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    params = ctx.params.augment.text if modality == "text" else ctx.params.augment.image
    steps.check_available(modality, params)
    train = engine.read_records(ctx.args.input / "train.parquet", modality=modality)
    kept, fates = new_variants(engine, ctx, train, params, reason="augmented", namespace="augment")
    ctx.ledger.record_spills(fates)
    n_out = engine.write_records(engine.concat([train, kept]), ctx.args.output)
    write_folder(_preview(engine, train, kept, modality), ctx.args.preview)
    n_in = record_count(ctx.args.input / "train.parquet")
    labels = engine.value_counts(engine.read_records(ctx.args.output, modality=modality, columns=["label"]), "label")
    return Outcome(n_in, n_out, {"labels": labels, "variants_kept": n_out - n_in})


def new_variants(engine: Engine, ctx: Context, train: Partitioned, params: TextAugmentParams | ImageAugmentParams, *,
                 reason: str, namespace: str) -> tuple[Partitioned, list[Path]]:
    """The variants of `train` that add something (records), and the fates' spill files of all of them."""
    plan = variant_plan(engine, train, params, ctx.params.seed)
    make = functools.partial(steps.make_variants, plan=plan, modality=ctx.dataset.modality, params=params,
                             seed=ctx.params.seed, reason=reason, namespace=namespace)
    made, made_fates, _ = engine.process(train, make)
    existing = [engine.read_records(ctx.args.input / f"{s}.parquet", modality=ctx.dataset.modality, columns=["content_hash"])
                for s in ("train", "val", "test")]
    rows = engine.concat([engine.map(part, steps.flag_variants, meta=VARIANT_ROWS, variant=variant, template=VARIANT_ROWS)
                          for part, variant in [(made, True), *((e, False) for e in existing)]])
    grouped = engine.group(rows, ["content_hash"], order=["content_hash", steps.VARIANT_FLAG, "id"], meta=VARIANT_ROWS)
    kept, kept_fates, _ = engine.process(grouped, steps.new_variants)
    return kept, [*made_fates, *kept_fates]


def variant_plan(engine: Engine, train: Partitioned, params: TextAugmentParams | ImageAugmentParams, seed: int) -> steps.VariantPlan:
    """How many variants each record gets, from class counts (and, for targets, the records first in
    the seed's order of each class short of its target)."""
    class_counts = engine.value_counts(train, "label")
    extras = steps.extra_variants(class_counts, params)
    firsts = steps.first_in_order(empty_records(), {}, seed)
    if extras:
        firsts = engine.collect(engine.map(train, steps.first_in_order, meta=firsts, extras=extras, seed=seed))
    return steps.variant_plan(class_counts, firsts, params)


def _preview(engine: Engine, train: Partitioned, kept: Partitioned, modality: str) -> dict[str, bytes]:
    """The preview from the few variants it shows and their parents, gathered from the partitions."""
    candidates = engine.collect(engine.map(kept, preview_candidates, meta=empty_records()))
    sample = preview_candidates(candidates)
    parents = engine.collect(engine.map(train, _records_in, meta=empty_records(), ids=frozenset(sample["parent_id"])))
    return preview_files(parents, sample, modality=modality)


def _records_in(records: pd.DataFrame, ids: frozenset[str]) -> pd.DataFrame:
    return records[records["id"].isin(ids)]



def main(argv: list[str] | None = None) -> int:
    return stage_main("augment", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
