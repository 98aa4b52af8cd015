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

import numpy as np
import pandas as pd

from pipeline.ledger import Fates
from pipeline.params import DedupParams


@dataclass(slots=True)
class DedupResult:
    """Survivors plus the fate of every other record: merged (into its survivor), dropped or flagged."""

    kept: pd.DataFrame
    fates: Fates = field(default_factory=Fates)
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


def _similar_texts(records: pd.DataFrame, params: DedupParams, loose: bool) -> Similar:
    from pipeline.steps.neardup import NearDupSettings, near_duplicates

    result = near_duplicates(records["text"].tolist(), NearDupSettings.from_params(params.text, loose=loose))
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

def record_sizes(records: pd.DataFrame) -> np.ndarray:
    """Size of each record for the "longest" policy: characters of its text, else bytes of its image."""
    if "text" in records and records["text"].notna().all():
        return records["text"].str.len().to_numpy(np.int64)
    return records["image"].map(len).to_numpy(np.int64)


def resolve_clusters(
    records: pd.DataFrame, labels: np.ndarray, params: DedupParams, *, reason: str, closest: dict | None = None
) -> DedupResult:
    """Keep one survivor per cluster (by policy) and record the fate of every other member.

    Vectorised over all clusters: a cluster splits into one part per label; a part's survivor is
    its first record by id (or its longest, by `params.survivor`). A cluster with one part merges
    into that survivor; a label conflict (several parts) follows `params.conflicts`.
    """
    sizes = np.bincount(labels, minlength=len(labels))[labels]
    shared = sizes > 1
    members = _members(records, labels, shared, params.survivor)
    survivor = members.groupby("part", sort=False)["id"].transform("first").to_numpy()
    conflict = members.groupby("cluster", sort=False)["part"].transform("nunique").to_numpy() > 1
    ids = members["id"].to_numpy()
    is_survivor = ids == survivor
    others = Fates()
    if params.conflicts == "majority":
        majority = _majority_survivor(members, survivor, conflict)
        minority = conflict & (survivor != majority)
        into = np.where(minority, majority, survivor)
        reasons = np.where(minority, "label_conflict_minority", reason)
        alive = is_survivor & ~minority
    else:
        into, reasons = survivor, np.full(len(ids), reason, dtype=object)
        if params.conflicts == "drop":
            alive, others = is_survivor & ~conflict, Fates.dropped(ids[conflict], "label_conflict")
        else:
            alive, others = is_survivor, Fates.flagged(ids[is_survivor & conflict], "label_conflict")
    moved = ~alive & ~conflict if params.conflicts == "drop" else ~alive
    details = _details(ids[moved], records["id"].tolist(), closest) if closest else None
    keep = ~shared
    keep[np.flatnonzero(shared)[members["row"].to_numpy()[alive]]] = True
    return DedupResult(
        kept=records[keep].sort_values("id", kind="stable"),
        fates=Fates.merged(ids[moved], into[moved], reasons[moved], details) + others,
        clusters=int(members["cluster"].nunique()), conflicts=int(members.loc[conflict, "cluster"].nunique()),
    )


def _members(records: pd.DataFrame, labels: np.ndarray, shared: np.ndarray, policy: str) -> pd.DataFrame:
    """Records in clusters of two or more, ordered so each part's survivor comes first.

    Columns: row (position among the shared records), cluster, label, id, part (cluster and label).
    """
    members = pd.DataFrame({
        "row": np.arange(int(shared.sum())), "cluster": labels[shared],
        "label": records["label"].to_numpy(object)[shared], "id": records["id"].to_numpy(object)[shared],
    })
    members["part"] = members.groupby(["cluster", "label"], sort=False, dropna=False).ngroup()  # a missing label is a label
    if policy == "longest":
        members["size"] = -record_sizes(records)[shared]
        return members.sort_values(["cluster", "label", "size", "id"], kind="stable")
    return members.sort_values(["cluster", "label", "id"], kind="stable")


def _majority_survivor(members: pd.DataFrame, survivor: np.ndarray, conflict: np.ndarray) -> np.ndarray:
    """Per member, the survivor of its cluster's most common label (ties: the smallest label)."""
    counts = members.assign(survivor=survivor, n=members.groupby("part")["id"].transform("size"))
    counts["n"] = -counts["n"]
    top = counts[conflict].sort_values(["cluster", "n", "label"], kind="stable").drop_duplicates("cluster")
    by_cluster = dict(zip(top["cluster"].tolist(), top["survivor"].tolist()))
    return np.array([by_cluster.get(c, s) for c, s in zip(members["cluster"].tolist(), survivor.tolist())], dtype=object)


def _details(merged_ids: np.ndarray, ids: list[str], closest: dict[int, tuple[int, str]]) -> list[str | None]:
    """Per merged record, its closest partner and the similarity, e.g. 'jaccard 0.912 with 3fa1...'."""
    position = {record_id: i for i, record_id in enumerate(ids)}
    out = []
    for record_id in merged_ids.tolist():
        partner, text = closest.get(position[record_id], (None, None))
        out.append(None if partner is None else f"{text} with {ids[partner]}")
    return out


def follow_merges(earlier: Fates, later: Fates) -> Fates:
    """Earlier merges re-pointed at the final survivor when a later pass merged their survivor too.

    An exact duplicate merged into X, where X then merges into its near duplicate Y, names Y (via X).
    """
    frame = earlier.frame.copy()
    onward = later.of("merged").set_index("id")["into"]
    is_merge = frame["fate"] == "merged"
    final = frame["into"].map(onward).where(is_merge)
    moved = final.notna()
    via = "via " + frame.loc[moved, "into"]
    frame.loc[moved, "detail"] = [f"{d}; {v}" if isinstance(d, str) and d else v for d, v in zip(frame.loc[moved, "detail"], via)]
    frame.loc[moved, "into"] = final[moved]
    return Fates(frame)


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
