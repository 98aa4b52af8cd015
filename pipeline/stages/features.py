"""Features: the frozen pretrained backbone's pooled features of every record, computed once.

The linear probe (the `linear_probe` strategy of finetune, and the baseline of the same name)
trains on these rather than running the backbone again. One Parquet file per split, rows sorted
by id: `id`, `label` and `features` (a fixed-size list of float32).

A split is read from its shards `CHUNK_ROWS` records at a time, in id order, and each chunk's
vectors are written as one row group, so memory is bounded by the chunk, not the split. The chunk
size is fixed (the model batches by length inside it, which decides float bits), never an
engine setting.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from pipeline.io import features_table, features_width, record_chunks, write_table_chunks
from pipeline.model.models import ImageClassifier, TextClassifier, feature_extractor
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main

SPLITS = ("train", "val", "test")
CHUNK_ROWS = 8_192  # records embedded at a time (a multiple of both models' batch sizes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val/test record sets)")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test feature files")


def run(ctx: Context) -> Outcome:
    params = ctx.params.finetune
    paths = {s: ctx.args.data / f"{s}.parquet" for s in SPLITS}
    labels = sorted({label for chunk in record_chunks(paths["train"], ["label"]) for label in chunk["label"]})
    model = feature_extractor(params, ctx.dataset.modality, labels, seed=derive_seed(ctx.params.seed, "features", bits=32))
    column = "text" if ctx.dataset.modality == "text" else "image"
    total = 0
    for name, path in paths.items():
        total += write_table_chunks(feature_tables(model, path, column), ctx.args.output / f"{name}.parquet")
    width = features_width(ctx.args.output / "train.parquet")
    return Outcome(total, total, {"dimensions": width, **model.device.describe(), "threads": params.threads})


def feature_tables(model: TextClassifier | ImageClassifier, path: Path, column: str) -> Iterator[pa.Table]:
    """The features of the record set at `path`, `CHUNK_ROWS` records at a time, in id order."""
    for chunk in record_chunks(path, ["id", "label", column], rows=CHUNK_ROWS):
        yield features_table(chunk, model.features(chunk).numpy())


def main(argv: list[str] | None = None) -> int:
    return stage_main("features", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
