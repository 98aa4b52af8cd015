"""Embed: the frozen pretrained backbone's pooled features of every record after dedup, computed once.

MiniLM mean pooling for texts, EfficientNet-Lite0 pooling for images (the models and settings of
`finetune`, as the features stage uses them). One Parquet file, rows sorted by id: `id`, `label`
and `features` (a fixed-size list of float32), read `pipeline.model.embedding.CHUNK_ROWS` records at a time in
id order, so the vectors never depend on an engine setting. The label-issue search reads it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io import features_width, record_chunks, write_table_chunks
from pipeline.model.models import feature_extractor
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.model.embedding import feature_tables


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from dedup")
    parser.add_argument("--output", required=True, type=Path, help="embeddings file to write (Parquet)")


def run(ctx: Context) -> Outcome:
    params = ctx.params.finetune
    labels = sorted({label for chunk in record_chunks(ctx.args.input, ["label"]) for label in chunk["label"]})
    model = feature_extractor(params, ctx.dataset.modality, labels, seed=derive_seed(ctx.params.seed, "embed", bits=32))
    column = "text" if ctx.dataset.modality == "text" else "image"
    total = write_table_chunks(feature_tables(model, ctx.args.input, column), ctx.args.output)
    width = features_width(ctx.args.output) if total else 0
    return Outcome(total, total, {"dimensions": width, **model.device.describe(), "threads": params.threads})


def main(argv: list[str] | None = None) -> int:
    return stage_main("embed", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
