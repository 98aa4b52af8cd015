"""Augment: add variants of train records (nlpaug for text, albumentations for images), train only.

A variant identical to its parent, or to any record in any split, is dropped and counted: it would
add nothing, or leak. A preview of originals beside their variants is written for people.

On the engine: the plan (how many variants each record gets) comes from class counts; variants are
made partition by partition of train; a shuffle on the content hash meets each variant with every
record and variant of equal content, anywhere in the splits.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline.engines import Engine, Partitioned, open_engine
from pipeline.engines.ranks import first_cutoffs
from pipeline.engines.variants import new_variants
from pipeline.io import empty_records, record_count, write_folder
from pipeline.params import ImageAugmentParams, TextAugmentParams
from pipeline.report.preview import preview_candidates, preview_files
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps import augment as steps

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of train/val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="record set directory for augmented train")
    parser.add_argument("--preview", required=True, type=Path, help="folder for the preview of variants")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    params = ctx.params.augment.text if modality == "text" else ctx.params.augment.image
    steps.check_available(modality, params)
    train = engine.read_records(ctx.args.input / "train.parquet", modality=modality)
    plan = variant_plan(engine, train, params, ctx.params.seed)
    existing = [ctx.args.input / f"{s}.parquet" for s in ("train", "val", "test")]
    kept, fates = new_variants(engine, train, plan, params, seed=ctx.params.seed, modality=modality, existing=existing,
                               reason="augmented", namespace="augment")
    ctx.ledger.record_spills(fates)
    n_out = engine.write_records(engine.concat([train, kept]), ctx.args.output)
    write_folder(_preview(engine, train, kept, modality), ctx.args.preview)
    n_in = record_count(ctx.args.input / "train.parquet")
    labels = engine.value_counts(engine.read_records(ctx.args.output, modality=modality, columns=["label"]), "label")
    return Outcome(n_in, n_out, {"labels": labels, "variants_kept": n_out - n_in})


def variant_plan(engine: Engine, train: Partitioned, params: TextAugmentParams | ImageAugmentParams, seed: int) -> steps.VariantPlan:
    """How many variants each record gets, from class counts (and, for targets, the cutoff of the
    records that get one more, found on the partitions)."""
    class_counts = engine.value_counts(train, "label")
    extras = steps.extra_variants(steps.shortfalls(class_counts, params.targets))
    cutoff = first_cutoffs(engine, train, extras, seed=seed, namespace="augment-order")
    return steps.variant_plan(class_counts, cutoff, params)


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
