"""Normalise: canonical Unicode and whitespace for texts; images decoded once, quality-checked, resized and re-encoded.

Content hashes are recomputed on the normalised content, so dedup compares what the model sees.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

from pipeline.engines import open_engine
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.normalise import normalise_partition


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from clean")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    records = engine.read_records(ctx.args.input, modality=modality)
    step = functools.partial(normalise_partition, modality=modality, params=ctx.params.normalise)
    kept, fates, counts = engine.process(records, step)
    ctx.ledger.record_spills(fates)
    return Outcome(counts["in"], engine.write_records(kept, ctx.args.output))


def main(argv: list[str] | None = None) -> int:
    return stage_main("normalise", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
