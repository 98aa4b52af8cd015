"""Features: the frozen pretrained backbone's pooled features of every record, computed once.

The linear probe (the `linear_probe` strategy of finetune, and the baseline of the same name)
trains on these rather than running the backbone again. One Parquet file per split, rows sorted
by id: `id`, `label` and `features` (a fixed-size list of float32).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import read_records, write_table
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, StageError, entry, stage_main
from pipeline.steps.device import choose_device, make_deterministic
from pipeline.steps.models import classifier_for

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val/test record sets)")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test feature files")


def features_table(frame: pd.DataFrame, matrix: np.ndarray) -> pa.Table:
    """Records' ids and labels with one feature vector each, sorted by id."""
    order = np.argsort(frame["id"].to_numpy(), kind="stable")
    flat = pa.array(np.ascontiguousarray(matrix[order], dtype=np.float32).reshape(-1))
    return pa.table({
        "id": frame["id"].to_numpy()[order], "label": frame["label"].to_numpy()[order],
        "features": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]),
    })


def read_features(folder: Path, split: str, ids: pd.Series) -> np.ndarray:
    """The feature rows of `ids`, in their order; fails naming the first id without features."""
    table = pq.read_table(folder / f"{split}.parquet")
    width = table.schema.field("features").type.list_size
    matrix = table.column("features").combine_chunks().flatten().to_numpy().reshape(-1, width)
    row = {key: i for i, key in enumerate(table.column("id").to_pylist())}
    missing = [key for key in ids if key not in row]
    if missing:
        raise StageError(f"{folder / split}.parquet has no features for record {missing[0]!r} "
                         f"({len(missing)} missing): rerun the features stage")
    return matrix[[row[key] for key in ids]]


def run(ctx: Context) -> Outcome:
    params = ctx.params.finetune
    device = choose_device(params.device)
    make_deterministic(derive_seed(ctx.params.seed, "features", bits=32), params.threads)
    splits = {s: read_records(ctx.args.data / f"{s}.parquet") for s in SPLITS}
    labels = sorted(set(splits["train"]["label"]))
    model = classifier_for(getattr(params, ctx.dataset.modality), labels, device=device)
    width = 0
    for name, frame in splits.items():
        matrix = model.features(frame).numpy()
        width = matrix.shape[1]
        write_table(features_table(frame, matrix), ctx.args.output / f"{name}.parquet")
    total = sum(len(f) for f in splits.values())
    return Outcome(total, total, {"dimensions": width, **device.describe(), "threads": params.threads})


def main(argv: list[str] | None = None) -> int:
    return stage_main("features", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
