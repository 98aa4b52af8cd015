"""Clean: read the source, canonicalise labels, repair texts or check image files, drop the unusable.

Every row or file of the source is accounted for: it is kept, or dropped with a reason in the
ledger whose detail names the file and line.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

from pipeline.engines import open_engine
from pipeline.stages.base import Context, Outcome, entry, prefixed, stage_main
from pipeline.steps.clean import clean_partition


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")
    parser.add_argument("--root", default=Path("."), type=Path, help="folder the dataset's source is relative to")


def run(ctx: Context) -> Outcome:
    engine = ctx.engine
    raw, n_in, found = engine.read_source(ctx.dataset, ctx.args.root)
    step = functools.partial(clean_partition, dataset=ctx.dataset, params=ctx.params.clean)
    records, fates, counts = engine.process(raw, step)
    ctx.ledger.record_spills(fates)
    n_out = engine.write_records(records, ctx.args.output)
    extra = {"labels": prefixed(counts, "labels"), "repaired": prefixed(counts, "repaired"), **found}
    return Outcome(n_in, n_out, extra)


def main(argv: list[str] | None = None) -> int:
    return stage_main("clean", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
