"""Semantic: records whose embeddings say the same thing, kept on one side of the split or merged.

Reads dedup's records and the embed stage's vectors of them, and finds every pair whose cosine
reaches `dedup.semantic.threshold` (`pipeline.steps.semantic`: exact search over all pairs, by
record id, in this process). With action `group` both records stay and their groups are joined,
so split keeps them on one side; with `merge` each cluster of neighbours merges as near
duplicates do (`dedup.survivor`, `dedup.conflicts`), reason `semantic_duplicate`, naming its
closest neighbour and the cosine. Every record left with a neighbour is flagged in the ledger
(`semantic_neighbour`, its closest one and the cosine), and every pair found is listed in the
pairs table (`a`, `b`, `cosine`; before any merge). The removals and the new group ids are applied
to each partition.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.engines import open_engine
from pipeline.engines.neighbours import empty
from pipeline.io import read_features, write_table
from pipeline.ledger import Fates
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.candidates import id_keys
from pipeline.steps.dedup import record_sizes, resolve_members
from pipeline.steps.semantic import (
    NEIGHBOUR,
    closest,
    clusters,
    detail,
    joined_groups,
    neighbour_pairs,
    surviving_pairs,
)

REASON = "semantic_duplicate"
PAIRS = pa.schema([("a", pa.string()), ("b", pa.string()), ("cosine", pa.float64())])
INFO = pa.schema([("id", pa.string()), ("label", pa.string()), ("group_id", pa.string()), ("size", pa.int64())])
WIDE_GROUP = 0.05  # a joined group holding more of the corpus than this is worth a warning
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from dedup")
    parser.add_argument("--embeddings", required=True, type=Path, help="embeddings of those records (the embed stage)")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")
    parser.add_argument("--pairs", required=True, type=Path, help="table of every neighbour pair found (Parquet)")


def run(ctx: Context) -> Outcome:
    engine, params = ctx.engine, ctx.params.dedup.semantic
    records = engine.read_records(ctx.args.input, modality=ctx.dataset.modality)
    info = engine.collect(engine.map(records, _info, meta=empty(INFO))).sort_values("id", kind="stable").reset_index(drop=True)
    pairs = _pairs(ctx, info)
    write_table(pa.Table.from_pandas(pairs, schema=PAIRS, preserve_index=False), ctx.args.pairs)
    extra: dict = {"threshold": params.threshold, "action": params.action, "pairs": len(pairs)}
    removed: set[str] = set()
    if params.action == "merge" and len(pairs):
        removed, into, extra["clusters"], extra["label_conflicts"] = _merge(ctx, info, pairs)
        pairs = surviving_pairs(pairs, into, removed)
    kept = info[~info["id"].isin(removed)].reset_index(drop=True)
    regrouped = joined_groups(kept, pairs)
    neighbours = closest(pairs)
    ctx.ledger.record(Fates.flagged(neighbours["id"], NEIGHBOUR, [detail(c, o) for o, c in zip(neighbours["other"], neighbours["cosine"])]))
    applied = engine.map(records, _applied, meta=records.frame._meta, removed=np.sort(id_keys(pd.Series(sorted(removed)))),
                         regrouped=dict(zip(regrouped["id"], regrouped["group_id"], strict=True)))
    n_out = engine.write_records(applied, ctx.args.output)
    extra.update(_group_metrics(ctx.name, kept, regrouped, params.threshold))
    extra["labels"] = {str(k): int(v) for k, v in kept["label"].value_counts().sort_index().items()}
    return Outcome(len(info), n_out, extra)


def _info(records: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"id": records["id"].to_numpy(object), "label": records["label"].to_numpy(object),
                         "group_id": records["group_id"].to_numpy(object), "size": record_sizes(records) if len(records) else []})


def _pairs(ctx: Context, info: pd.DataFrame) -> pd.DataFrame:
    """The semantic neighbour pairs among the records (none when the threshold is null)."""
    threshold = ctx.params.dedup.semantic.threshold
    if threshold is None or len(info) < 2:
        return pd.DataFrame({"a": pd.Series(dtype=object), "b": pd.Series(dtype=object), "cosine": pd.Series(dtype=float)})
    return neighbour_pairs(info["id"].to_numpy(object), read_features(ctx.args.embeddings, info["id"]), threshold)


def _merge(ctx: Context, info: pd.DataFrame, pairs: pd.DataFrame) -> tuple[set[str], dict[str, str], int, int]:
    """Merge each cluster of neighbours (ledger rows recorded): the ids removed, each merged id's
    survivor, and the cluster and label-conflict counts."""
    partner = closest(pairs)
    members = clusters(pairs).merge(info, on="id").merge(partner, on="id", how="left")
    members = members.assign(key=id_keys(members["id"]), cluster=id_keys(members["cluster"]),
                             detail=[detail(c, o) for o, c in zip(members["other"], members["cosine"])])
    resolved = resolve_members(members[["cluster", "key", "id", "label", "size", "detail"]], ctx.params.dedup, reason=REASON)
    ctx.ledger.record(resolved.fates)
    fates = resolved.fates.frame
    gone = fates[fates["fate"].isin(["merged", "dropped"])]
    merged = gone[gone["fate"] == "merged"]
    return set(gone["id"]), dict(zip(merged["id"], merged["into"], strict=True)), resolved.counts["clusters"], resolved.counts["conflicts"]


def _applied(records: pd.DataFrame, removed: np.ndarray, regrouped: dict[str, str]) -> pd.DataFrame:
    """The records not `removed` (sorted id keys), with their joined groups' ids."""
    kept = records[~np.isin(id_keys(records["id"]), removed)]
    return kept.assign(group_id=np.array([regrouped.get(i, g) for i, g in zip(kept["id"], kept["group_id"], strict=True)], dtype=object))


def _group_metrics(dataset: str, kept: pd.DataFrame, regrouped: pd.DataFrame, threshold: float | None) -> dict:
    """How the neighbours changed the groups, warning when one joined group holds much of the corpus."""
    if regrouped.empty:
        return {"records_regrouped": 0, "groups_joined": 0, "largest_joined_group": 0}
    groups = kept.set_index("id")["group_id"]
    before = groups.loc[regrouped["id"]]
    groups.loc[regrouped["id"]] = regrouped["group_id"].to_numpy(object)
    sizes = groups.value_counts()
    largest = int(sizes.loc[regrouped["group_id"].unique()].max())
    if largest > max(2, WIDE_GROUP * len(kept)):
        log.warning("semantic@%s: one group of semantic neighbours holds %d of %d records (dedup.semantic.threshold %s): split "
                    "keeps it on one side; a higher threshold joins fewer", dataset, largest, len(kept), threshold)
    return {"records_regrouped": len(regrouped), "groups_joined": int(before.nunique()), "largest_joined_group": largest}


def main(argv: list[str] | None = None) -> int:
    return stage_main("semantic", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
