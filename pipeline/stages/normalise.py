"""Normalise: canonical Unicode and whitespace for texts; images decoded once, quality-checked, resized and re-encoded.

Content hashes are recomputed on the normalised content, so dedup compares what the model sees.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

from pipeline.engines import chunk_size_for, map_chunks
from pipeline.io import read_records, write_records
from pipeline.ledger import Fates
from pipeline.records import source_location
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.normalise import normalise_images, normalise_texts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from clean")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")


def run(ctx: Context) -> Outcome:
    records = read_records(ctx.args.input)
    engine, params = ctx.params.engine, ctx.params.normalise
    if ctx.dataset.modality == "text":
        fn, items, columns = functools.partial(normalise_texts, params=params.text), list(records["text"]), ["text"]
    else:
        fn, items, columns = functools.partial(normalise_images, params=params.image), list(records["image"]), ["image", "width", "height"]
    chunk_size = chunk_size_for(ctx.dataset.modality, engine.chunk_size)
    results = map_chunks(fn, items, workers=engine.workers, chunk_size=chunk_size, desc="normalise")
    for column in [*columns, "content_hash"]:
        records[column] = [getattr(r, column) for r in results]
    ctx.ledger.record(Fates.from_verdicts(records["id"].tolist(), results, source_location(records).tolist()))
    kept = records.loc[[r.reason is None for r in results]]
    write_records(kept, ctx.args.output)
    return Outcome(len(records), len(kept))


def main(argv: list[str] | None = None) -> int:
    return stage_main("normalise", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
