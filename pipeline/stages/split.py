"""Split: stratified train/val/test by whole groups (or the source's own split, if asked).

Runs before augment and rebalance, so generated records can only ever exist in train.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io import read_records, write_records
from pipeline.stages.base import Context, Outcome, StageError, entry, stage_main
from pipeline.steps.split import SPLITS, SplitError, source_split_plan, split_report, stratified_group_split


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from dedup")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test record sets")


def run(ctx: Context) -> Outcome:
    records = read_records(ctx.args.input)
    params, seed = ctx.params.split, ctx.params.seed
    keep_source = ctx.dataset.source_split == "keep"
    try:
        plan = source_split_plan(records, params, seed) if keep_source else stratified_group_split(records, params, seed)
    except SplitError as exc:
        raise StageError(str(exc)) from None
    report = split_report(records, plan.assignment, params)
    if report["groups_on_two_sides"] and not keep_source:
        raise StageError(f"{report['groups_on_two_sides']} groups ended up on two sides of the split")
    for split in SPLITS:
        write_records(records[plan.assignment == split], ctx.args.output / f"{split}.parquet")
    extra = {**report, "train_only_classes": plan.train_only_classes, "source_split": keep_source}
    return Outcome(len(records), int(plan.assignment.isin(SPLITS).sum()), extra)


def main(argv: list[str] | None = None) -> int:
    return stage_main("split", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
