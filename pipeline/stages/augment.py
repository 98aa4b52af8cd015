"""Augment: add variants of train records (nlpaug for text, albumentations for images), train only.

A variant identical to its parent, or to any record in any split, is dropped and counted: it would
add nothing, or leak. A preview of originals beside their variants is written for people.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline.engines import chunk_size_for
from pipeline.io import read_records, write_folder, write_records
from pipeline.report.preview import preview_files
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.augment import check_available, generate_variants, keep_new, variant_counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of train/val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="record set directory for augmented train")
    parser.add_argument("--preview", required=True, type=Path, help="folder for the preview of variants")


def run(ctx: Context) -> Outcome:
    train = read_records(ctx.args.input / "train.parquet")
    held_out = pd.concat([read_records(ctx.args.input / f"{s}.parquet", columns=["content_hash"]) for s in ("val", "test")])
    keep, fates = keep_new(_variants(ctx, train), train, set(held_out["content_hash"]), reason="augmented")
    ctx.ledger.record(fates)
    out = pd.concat([train, keep], ignore_index=True)
    write_records(out, ctx.args.output)
    write_folder(preview_files(train, keep, modality=ctx.dataset.modality), ctx.args.preview)
    extra = {"labels": out["label"].value_counts().sort_index().to_dict(), "variants_kept": len(keep)}
    return Outcome(len(train), len(out), extra)


def _variants(ctx: Context, train: pd.DataFrame) -> pd.DataFrame:
    """Generated records for the eligible train records, with the parent's label, group and source."""
    params = ctx.params.augment.text if ctx.dataset.modality == "text" else ctx.params.augment.image
    check_available(ctx.dataset.modality, params)
    engine = ctx.params.engine
    return generate_variants(train, variant_counts(train, params, ctx.params.seed), ctx.dataset.modality, params,
                             ctx.params.seed, workers=engine.workers, chunk_size=chunk_size_for(ctx.dataset.modality, engine.chunk_size))


def main(argv: list[str] | None = None) -> int:
    return stage_main("augment", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
