"""Dedup: collapse records with equal content hashes into one survivor each.

A cluster is the set of records sharing a content hash. One record survives (by policy); the
others are merged into it. A cluster whose members disagree on the label is a conflict, handled
by policy: keep the majority label, drop the whole cluster, or keep one survivor per label.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.params import DedupParams


@dataclass(slots=True)
class DedupResult:
    """Survivors plus the fate of every other record."""

    kept: pd.DataFrame
    merged: list[tuple[str, str, str]] = field(default_factory=list)  # (id, survivor, reason)
    dropped: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    clusters: int = 0
    conflicts: int = 0


def choose_survivor(members: pd.DataFrame, policy: str) -> str:
    """Id of the record that represents a cluster: the smallest id, or the longest content."""
    if policy == "longest":
        size = members["text"].str.len() if members["text"].notna().all() else members["image"].map(len)
        ordered = members.assign(_size=size).sort_values(["_size", "id"], ascending=[False, True])
        return str(ordered["id"].iloc[0])
    return str(members["id"].min())


def exact_duplicates(records: pd.DataFrame, params: DedupParams) -> DedupResult:
    """Merge records with equal `content_hash`; label conflicts follow `params.conflicts`."""
    result = DedupResult(kept=records.iloc[0:0])
    survivors: list[str] = []
    sizes = records.groupby("content_hash", sort=False)["id"].transform("size")
    singles = records[sizes == 1]
    for _, members in records[sizes > 1].groupby("content_hash", sort=True):
        result.clusters += 1
        survivors.extend(_resolve(members.sort_values("id"), params, result))
    kept_dups = records[records["id"].isin(set(survivors))]
    result.kept = pd.concat([singles, kept_dups]).sort_values("id", kind="stable")
    return result


def _resolve(members: pd.DataFrame, params: DedupParams, result: DedupResult) -> list[str]:
    """Survivor ids of one cluster, recording merges, drops and flags in `result`."""
    labels = members["label"].value_counts()
    if len(labels) == 1:
        return [_merge(members, params, result)]
    result.conflicts += 1
    if params.conflicts == "drop":
        result.dropped.extend(members["id"])
        return []
    if params.conflicts == "keep":
        kept = [_merge(group, params, result) for _, group in members.groupby("label", sort=True)]
        result.flagged.extend(kept)
        return kept
    majority = sorted(labels[labels == labels.max()].index)[0]
    survivor = _merge(members[members["label"] == majority], params, result)
    others = members[members["label"] != majority]["id"]
    result.merged.extend((i, survivor, "label_conflict_minority") for i in others)
    return [survivor]


def _merge(members: pd.DataFrame, params: DedupParams, result: DedupResult) -> str:
    survivor = choose_survivor(members, params.survivor)
    result.merged.extend((i, survivor, "exact_duplicate") for i in members["id"] if i != survivor)
    return survivor
