"""Dedup: merge exact duplicates, then verified near duplicates, and group what stays similar.

Every merged record names its survivor in the ledger (near duplicates also their closest partner
and similarity); label conflicts follow params `dedup.conflicts` and are counted in the metrics.
A looser near-duplicate threshold fills `group_id`, which split keeps on one side.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io import read_records, write_records
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.dedup import exact_duplicates, follow_merges, group_ids, near_duplicates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from normalise")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")


def run(ctx: Context) -> Outcome:
    records = read_records(ctx.args.input)
    params, modality = ctx.params.dedup, ctx.dataset.modality
    exact = exact_duplicates(records, params)
    kept = exact.kept
    near = near_duplicates(kept, modality, params) if params.near and len(kept) > 1 else None
    if near is not None:
        ctx.ledger.record(follow_merges(exact.fates, near.fates), near.fates)
        kept = near.kept
    else:
        ctx.ledger.record(exact.fates)
    kept = kept.assign(group_id=group_ids(kept, modality, params)) if len(kept) > 1 else kept
    write_records(kept, ctx.args.output)
    groups = kept["group_id"].value_counts()
    extra = {
        "clusters": exact.clusters,
        "near_clusters": near.clusters if near else 0,
        "label_conflicts": exact.conflicts + (near.conflicts if near else 0),
        "duplicate_rate": round(1 - len(kept) / len(records), 6) if len(records) else 0.0,
        "groups_of_similar_records": int((groups > 1).sum()),
        "records_in_groups": int(groups[groups > 1].sum()),
        "labels": kept["label"].value_counts().sort_index().to_dict(),
    }
    return Outcome(len(records), len(kept), extra)


def main(argv: list[str] | None = None) -> int:
    return stage_main("dedup", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
