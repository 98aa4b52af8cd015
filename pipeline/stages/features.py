"""Features: the frozen pretrained backbone's pooled features of every record, computed once.

The linear probe (the `linear_probe` strategy of finetune, and the baseline of the same name)
trains on these rather than running the backbone again. One Parquet file per split, rows sorted
by id: `id`, `label` and `features` (a fixed-size list of float32).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io import read_records, write_features
from pipeline.model.models import feature_extractor
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val/test record sets)")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test feature files")


def run(ctx: Context) -> Outcome:
    params = ctx.params.finetune
    splits = {s: read_records(ctx.args.data / f"{s}.parquet") for s in SPLITS}
    labels = sorted(set(splits["train"]["label"]))
    model = feature_extractor(params, ctx.dataset.modality, labels, seed=derive_seed(ctx.params.seed, "features", bits=32))
    width = 0
    for name, frame in splits.items():
        matrix = model.features(frame).numpy()
        width = matrix.shape[1]
        write_features(frame, matrix, ctx.args.output / f"{name}.parquet")
    total = sum(len(f) for f in splits.values())
    return Outcome(total, total, {"dimensions": width, **model.device.describe(), "threads": params.threads})


def main(argv: list[str] | None = None) -> int:
    return stage_main("features", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
