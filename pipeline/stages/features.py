"""Features: the frozen pretrained backbone's pooled features of every record of the final splits.

The linear probe (the `linear_probe` strategy of finetune, and the baseline of the same name)
trains on these rather than running the backbone again. One Parquet file per split, rows sorted
by id: `id`, `label` (the final record's) and `features` (a fixed-size list of float32).

Nothing is embedded twice (`pipeline.model.embedding.shared_vectors`): a record the embed stage saw
(its id is in `--embeddings`) takes that stage's vector, bytes unchanged; any other record takes
the vector of a record of its split with the same content hash (an oversampled copy takes its
parent's); only new content (augmented variants) goes through the model, each distinct content
once. The metrics count the records each way: `vectors.reused`, `vectors.copied` and
`vectors.embedded`. Each split is written `CHUNK_ROWS` records at a time, one row group each.
"""
from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from pipeline.io import (
    features_table,
    record_chunks,
    scratch_folder,
    write_table_chunks,
)
from pipeline.model.device import choose_device
from pipeline.model.embedding import (
    CHUNK_ROWS,
    Extractor,
    Vectors,
    record_keys,
    shared_vectors,
)
from pipeline.model.models import feature_extractor
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val/test record sets)")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test feature files")
    parser.add_argument("--embeddings", type=Path, help="the embed stage's vectors, reused for the records it saw "
                                                        "(without it, every distinct content is embedded here)")


def run(ctx: Context) -> Outcome:
    params = ctx.params.finetune
    paths = {s: ctx.args.data / f"{s}.parquet" for s in SPLITS}
    model = functools.cache(functools.partial(_extractor, ctx, paths["train"]))
    counts, total = dict.fromkeys(("reused", "copied", "embedded"), 0), 0
    with scratch_folder(ctx.args.output.parent, "features") as scratch:
        for name, path in paths.items():
            vectors = shared_vectors(record_keys(path), embeddings=ctx.args.embeddings, path=path, column=_column(ctx),
                                     model=model, store=scratch / f"{name}.npy")
            total += write_table_chunks(stored_tables(vectors, path), ctx.args.output / f"{name}.parquet")
            counts = {key: n + vectors.counts[key] for key, n in counts.items()}
    extra = {"dimensions": vectors.matrix.shape[1], **choose_device(params.device).describe(), "threads": params.threads,
             "vectors": counts}
    return Outcome(total, total, extra)


def _column(ctx: Context) -> str:
    return "text" if ctx.dataset.modality == "text" else "image"


def _extractor(ctx: Context, train: Path) -> Extractor:
    """The backbone, built only when there is content to embed."""
    labels = sorted({label for chunk in record_chunks(train, ["label"]) for label in chunk["label"]})
    return feature_extractor(ctx.params.finetune, ctx.dataset.modality, labels, seed=derive_seed(ctx.params.seed, "features", bits=32))


def stored_tables(vectors: Vectors, path: Path) -> Iterator[pa.Table]:
    """The features of the record set at `path` from `vectors`, `CHUNK_ROWS` records at a time, in id order."""
    for chunk in record_chunks(path, ["id", "label"], rows=CHUNK_ROWS):
        yield features_table(chunk, vectors.of(chunk["id"]))


def main(argv: list[str] | None = None) -> int:
    return stage_main("features", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
