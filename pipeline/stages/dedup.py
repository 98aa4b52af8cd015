"""Dedup: merge exact duplicates (equal normalised content) into one survivor per cluster.

Every merged record names its survivor in the ledger; label conflicts follow params
`dedup.conflicts` and are counted in the metrics.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io import read_records, write_records
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.dedup import exact_duplicates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from normalise")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")


def run(ctx: Context) -> Outcome:
    records = read_records(ctx.args.input)
    result = exact_duplicates(records, ctx.params.dedup)
    for reason in sorted({m[2] for m in result.merged}):
        pairs = [m for m in result.merged if m[2] == reason]
        ctx.ledger.merge([m[0] for m in pairs], [m[1] for m in pairs], reason)
    ctx.ledger.drop(result.dropped, "label_conflict")
    ctx.ledger.flag(result.flagged, "label_conflict")
    write_records(result.kept, ctx.args.output)
    extra = {
        "clusters": result.clusters,
        "label_conflicts": result.conflicts,
        "duplicate_rate": round(1 - len(result.kept) / len(records), 6) if len(records) else 0.0,
        "labels": result.kept["label"].value_counts().sort_index().to_dict(),
    }
    return Outcome(len(records), len(result.kept), extra)


def main(argv: list[str] | None = None) -> int:
    return stage_main("dedup", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
