"""Split: stratified train/val/test by whole groups (or the source's own split, if asked).

Runs before augment and rebalance, so generated records can only ever exist in train. Writes a
leakage certificate, computed from the content independently of the grouping, and fails if any
record has a duplicate across the split (with a source's own split: reports, or drops them).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pipeline.errors import StageError
from pipeline.io import read_records, write_json, write_records
from pipeline.ledger import Fates
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.leakage import certificate, cross_split_pairs, evaluation_side_ids, method_text
from pipeline.steps.split import (
    SPLITS, iterative_group_split, source_split_plan, split_report, stratified_group_split,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from dedup")
    parser.add_argument("--output", required=True, type=Path, help="folder for train/val/test record sets")
    parser.add_argument("--leakage", required=True, type=Path, help="where to write the leakage certificate (JSON)")


def run(ctx: Context) -> Outcome:
    records = read_records(ctx.args.input)
    n_in = len(records)
    params, seed = ctx.params.split, ctx.params.seed
    keep_source = ctx.dataset.source_split == "keep"
    separator = ctx.dataset.label_separator if ctx.dataset.multi_label else None
    if keep_source:
        plan = source_split_plan(records, params, seed)
    elif separator:
        plan = iterative_group_split(records, params, seed, separator)
    else:
        plan = stratified_group_split(records, params, seed)
    report = split_report(records, plan.assignment, params, separator)
    if report["groups_on_two_sides"] and not keep_source:
        raise RuntimeError(f"bug: {report['groups_on_two_sides']} groups ended up on two sides of the split")
    records, assignment, leaks = _certify(ctx, records, plan.assignment, keep_source)
    for split in SPLITS:
        write_records(records[assignment == split], ctx.args.output / f"{split}.parquet")
    extra = {**split_report(records, assignment, params, separator), "train_only_classes": plan.train_only_classes,
             "source_split": keep_source, "leakage": {"cross_split_pairs": len(leaks)}}
    return Outcome(n_in, int(assignment.isin(SPLITS).sum()), extra)


def _certify(ctx: Context, records: pd.DataFrame, assignment: pd.Series, keep_source: bool):
    """Write the leakage certificate; fail on any leak, unless the source's own split is kept."""
    modality, dedup = ctx.dataset.modality, ctx.params.dedup
    seed = derive_seed(ctx.params.seed, "leakage", bits=32)
    leaks = cross_split_pairs(records, assignment, modality, dedup, seed)
    if keep_source and leaks and ctx.params.split.source_leakage == "drop":
        leaking = evaluation_side_ids(leaks)
        mask = records["id"].isin(leaking)
        ctx.ledger.record(Fates.dropped(records.loc[mask, "id"], "duplicate_across_source_split"))
        records, assignment = records[~mask], assignment[~mask]
        leaks = cross_split_pairs(records, assignment, modality, dedup, seed)
    checked = {s: int((assignment == s).sum()) for s in SPLITS}
    write_json(certificate(leaks, method=method_text(modality, dedup), checked=checked), ctx.args.leakage)
    if leaks and not keep_source:
        first = leaks[0]
        raise StageError(
            f"leakage certificate: {len(leaks)} record(s) duplicated across splits, e.g. {first.split} {first.id} "
            f"~ {first.other_split} {first.other_id} ({first.similarity}); see {ctx.args.leakage}"
        )
    return records, assignment, leaks


def main(argv: list[str] | None = None) -> int:
    return stage_main("split", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
