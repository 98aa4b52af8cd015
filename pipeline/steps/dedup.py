"""Dedup: collapse exact and near duplicates into one survivor per cluster, and group the rest.

A cluster is given by labels: each record's label is the position of its cluster's first member.
Exact clusters share a key (the content hash, optionally with the label); near clusters come from
MinHash/LSH (texts) or perceptual hashes (images), verified and chained by union-find. One record
of a cluster survives (by policy); the others are merged into it. A cluster whose members disagree
on the label is a conflict, handled by policy: keep the majority label, drop the whole cluster, or
keep one survivor per label. A looser near-duplicate threshold then gives `group_id`s, so the split
keeps similar records that both survive on one side.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.params import DedupParams

if TYPE_CHECKING:
    from pipeline.steps.neardup import NearDupSettings

Merge = tuple[str, str, str, str | None]  # (id, survivor, reason, detail)


@dataclass(slots=True)
class DedupResult:
    """Survivors plus the fate of every other record."""

    kept: pd.DataFrame
    merged: list[Merge] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    clusters: int = 0
    conflicts: int = 0


@dataclass(slots=True)
class Similar:
    """Near-duplicate structure of a record set: cluster labels and, per record, its closest partner."""

    labels: np.ndarray
    closest: dict[int, tuple[int, str]] = field(default_factory=dict)  # position -> (partner position, "jaccard 0.91")


# --- clusters -------------------------------------------------------------------------------

def key_labels(keys: pd.Series) -> np.ndarray:
    """Cluster labels of records with equal keys (the position of each key's first record)."""
    codes = pd.factorize(keys.to_numpy())[0]
    first = pd.Series(np.arange(len(codes))).groupby(codes).transform("min").to_numpy()
    return first.astype(np.int64)


def exact_key(records: pd.DataFrame, params: DedupParams) -> pd.Series:
    """The exact-duplicate key: normalised content hash, with the label if so configured."""
    if params.key == "content_and_label":
        return records["content_hash"] + "\x1f" + records["label"]
    return records["content_hash"]


def similar_records(records: pd.DataFrame, modality: str, params: DedupParams, *, loose: bool = False) -> Similar:
    """Near-duplicate clusters at the merge threshold, or at the looser group threshold."""
    if modality == "text":
        return _similar_texts(records, params, loose)
    return _similar_images(records, params, loose)


def text_settings(params: DedupParams, *, loose: bool = False, seed: int = 0) -> NearDupSettings:
    """The near-duplicate engine's settings for dedup's merge threshold (or the looser group one)."""
    from pipeline.steps.neardup import NearDupSettings

    near = params.text
    return NearDupSettings(
        threshold=near.group_threshold if loose else near.threshold, num_perm=near.num_perm, shingle=near.shingle,
        size=near.size, bands=None if loose else near.bands, rows=None if loose else near.rows, verify=near.verify, seed=seed,
    )


def _similar_texts(records: pd.DataFrame, params: DedupParams, loose: bool) -> Similar:
    from pipeline.steps.neardup import near_duplicates

    result = near_duplicates(records["text"].tolist(), text_settings(params, loose=loose))
    return Similar(result.labels, _closest(result.pairs, [f"jaccard {j:.3f}" for j in result.jaccard], result.jaccard))


def _similar_images(records: pd.DataFrame, params: DedupParams, loose: bool) -> Similar:
    from pipeline.steps.imagehash import cluster_labels, hash_images, near_pairs

    near = params.image
    hashes = hash_images(records["image"].tolist(), method=near.hash)
    pairs = near_pairs(hashes, near.group_max_distance if loose else near.max_distance)
    labels = cluster_labels(len(records), pairs[:, :2])
    return Similar(labels, _closest(pairs[:, :2], [f"hamming {d}" for d in pairs[:, 2]], -pairs[:, 2].astype(float)))


def _closest(pairs: np.ndarray, texts: list[str], score: np.ndarray) -> dict[int, tuple[int, str]]:
    """For each record in a pair, its best-scoring partner and how similar they are."""
    best: dict[int, tuple[float, int, str]] = {}
    for (i, j), text, value in zip(pairs.tolist(), texts, score.tolist()):
        for a, b in ((i, j), (j, i)):
            if a not in best or value > best[a][0]:
                best[a] = (value, b, text)
    return {a: (b, text) for a, (_, b, text) in best.items()}


# --- resolving clusters ---------------------------------------------------------------------

def choose_survivor(members: pd.DataFrame, policy: str) -> str:
    """Id of the record that represents a cluster (members sorted by id)."""
    if policy == "longest":
        size = members["text"].str.len() if members["text"].notna().all() else members["image"].map(len)
        ordered = members.assign(_size=size).sort_values(["_size", "id"], ascending=[False, True])
        return str(ordered["id"].iloc[0])
    if policy == "most_common_label":
        counts = members["label"].value_counts()
        top = sorted(counts[counts == counts.max()].index)[0]
        return str(members.loc[members["label"] == top, "id"].min())
    return str(members["id"].min())


def resolve_clusters(
    records: pd.DataFrame, labels: np.ndarray, params: DedupParams, *, reason: str, closest: dict | None = None
) -> DedupResult:
    """Keep one survivor per cluster (by policy) and record the fate of every other member."""
    sizes = pd.Series(labels).map(pd.Series(labels).value_counts()).to_numpy()
    result = DedupResult(kept=records.iloc[0:0])
    survivors: list[str] = []
    for _, members in records[sizes > 1].groupby(labels[sizes > 1], sort=True):
        result.clusters += 1
        survivors.extend(_resolve(members.sort_values("id"), params, result, reason))
    keep = (sizes == 1) | records["id"].isin(set(survivors)).to_numpy()
    result.kept = records[keep].sort_values("id", kind="stable")
    if closest:
        result.merged = _with_details(result.merged, records["id"].tolist(), closest)
    return result


def _with_details(merges: list[Merge], ids: list[str], closest: dict[int, tuple[int, str]]) -> list[Merge]:
    """Merges whose detail names the closest partner and the similarity, e.g. 'jaccard 0.912 with 3fa1...'."""
    position = {record_id: i for i, record_id in enumerate(ids)}
    out = []
    for record_id, survivor, reason, _ in merges:
        partner, text = closest.get(position[record_id], (None, None))
        out.append((record_id, survivor, reason, None if partner is None else f"{text} with {ids[partner]}"))
    return out


def _resolve(members: pd.DataFrame, params: DedupParams, result: DedupResult, reason: str) -> list[str]:
    """Survivor ids of one cluster, recording merges, drops and flags in `result`."""
    labels = members["label"].value_counts()
    if len(labels) == 1:
        return [_merge(members, params, result, reason)]
    result.conflicts += 1
    if params.conflicts == "drop":
        result.dropped.extend(members["id"])
        return []
    if params.conflicts == "keep":
        kept = [_merge(group, params, result, reason) for _, group in members.groupby("label", sort=True)]
        result.flagged.extend(kept)
        return kept
    majority = sorted(labels[labels == labels.max()].index)[0]
    survivor = _merge(members[members["label"] == majority], params, result, reason)
    result.merged.extend((i, survivor, "label_conflict_minority", None) for i in members.loc[members["label"] != majority, "id"])
    return [survivor]


def _merge(members: pd.DataFrame, params: DedupParams, result: DedupResult, reason: str) -> str:
    survivor = choose_survivor(members, params.survivor)
    result.merged.extend((i, survivor, reason, None) for i in members["id"] if i != survivor)
    return survivor


def follow_merges(earlier: list[Merge], later: list[Merge]) -> list[Merge]:
    """Earlier merges re-pointed at the final survivor when a later pass merged their survivor too.

    An exact duplicate merged into X, where X then merges into its near duplicate Y, names Y (via X).
    """
    onward = {record_id: survivor for record_id, survivor, _, _ in later}
    out = []
    for record_id, survivor, reason, detail in earlier:
        final = onward.get(survivor, survivor)
        if final != survivor:
            detail = "; ".join(filter(None, [detail, f"via {survivor}"]))
        out.append((record_id, final, reason, detail))
    return out


# --- entry points ---------------------------------------------------------------------------

def exact_duplicates(records: pd.DataFrame, params: DedupParams) -> DedupResult:
    """Merge records with equal exact keys; label conflicts follow `params.conflicts`."""
    return resolve_clusters(records, key_labels(exact_key(records, params)), params, reason="exact_duplicate")


def near_duplicates(records: pd.DataFrame, modality: str, params: DedupParams) -> DedupResult:
    """Merge verified near duplicates (chains included); merges name their closest partner."""
    records = records.sort_values("id", kind="stable").reset_index(drop=True)
    similar = similar_records(records, modality, params)
    return resolve_clusters(records, similar.labels, params, reason="near_duplicate", closest=similar.closest)


def group_ids(records: pd.DataFrame, modality: str, params: DedupParams) -> pd.Series:
    """group_id per record: the smallest id of its cluster at the looser threshold (its own id if alone)."""
    ordered = records.sort_values("id", kind="stable")
    labels = similar_records(ordered.reset_index(drop=True), modality, params, loose=True).labels
    first_ids = ordered["id"].to_numpy()[labels]  # labels point at each cluster's first (smallest-id) member
    return pd.Series(first_ids, index=ordered.index).reindex(records.index)
