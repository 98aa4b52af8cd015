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

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.ledger import Fates, Processed
from pipeline.params import DedupParams
from pipeline.steps.candidates import id_keys, image_signatures, key_ids, text_signatures


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
    details = _details(members["id"].to_numpy(), records["id"].tolist(), closest) if closest else None
    fates, alive, clusters, conflicts = _resolve(members, params, reason, details)
    keep = ~shared
    keep[np.flatnonzero(shared)[members["row"].to_numpy()[alive]]] = True
    return DedupResult(kept=records[keep].sort_values("id", kind="stable"), fates=fates, clusters=clusters, conflicts=conflicts)


def resolve_members(members: pd.DataFrame, params: DedupParams, *, reason: str) -> Processed:
    """`resolve_clusters` for cluster members gathered from anywhere (whole clusters only): columns
    `cluster`, `key`, `id`, `label`, `size` and `detail` (None, or the closest partner and how close).

    Records: the `key`s of the members merged or dropped. Counts: `clusters` and `conflicts`.
    """
    ordered = _ordered(members.assign(row=np.arange(len(members))), params.survivor)
    details = ordered["detail"].to_numpy(object) if ordered["detail"].notna().any() else None
    fates, alive, clusters, conflicts = _resolve(ordered, params, reason, details)
    removed = ordered.loc[~alive, ["key"]].reset_index(drop=True)
    return Processed(removed, fates, Counter({"clusters": clusters, "conflicts": conflicts}))


def _resolve(members: pd.DataFrame, params: DedupParams, reason: str,
             details: np.ndarray | None) -> tuple[Fates, np.ndarray, int, int]:
    """Fates of sorted members (see `_ordered`), which survive, and the cluster and conflict counts."""
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
    fates = Fates.merged(ids[moved], into[moved], reasons[moved], None if details is None else details[moved]) + others
    return fates, alive, int(members["cluster"].nunique()), int(members.loc[conflict, "cluster"].nunique())


def _members(records: pd.DataFrame, labels: np.ndarray, shared: np.ndarray, policy: str) -> pd.DataFrame:
    """Records in clusters of two or more, ordered so each part's survivor comes first.

    Columns: row (position among the shared records), cluster, label, id, part (cluster and label).
    """
    members = pd.DataFrame({
        "row": np.arange(int(shared.sum())), "cluster": labels[shared],
        "label": records["label"].to_numpy(object)[shared], "id": records["id"].to_numpy(object)[shared],
    })
    if policy == "longest":
        members["size"] = record_sizes(records)[shared]
    return _ordered(members, policy)


def _ordered(members: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Members with their `part` (cluster and label), sorted so that each part's survivor comes first."""
    members = members.assign(part=members.groupby(["cluster", "label"], sort=False, dropna=False).ngroup())  # a missing label is a label
    if policy == "longest":
        members["order"] = -members["size"].to_numpy(np.int64)
        return members.sort_values(["cluster", "label", "order", "id"], kind="stable").drop(columns="order")
    return members.sort_values(["cluster", "label", "id"], kind="stable")


def _majority_survivor(members: pd.DataFrame, survivor: np.ndarray, conflict: np.ndarray) -> np.ndarray:
    """Per member, the survivor of its cluster's most common label (ties: the smallest label)."""
    counts = members.assign(survivor=survivor, n=members.groupby("part")["id"].transform("size"))
    counts["n"] = -counts["n"]
    top = counts[conflict].sort_values(["cluster", "n", "label"], kind="stable").drop_duplicates("cluster")
    by_cluster = dict(zip(top["cluster"].tolist(), top["survivor"].tolist()))
    return np.array([by_cluster.get(c, s) for c, s in zip(members["cluster"].tolist(), survivor.tolist())], dtype=object)


def _details(member_ids: np.ndarray, ids: list[str], closest: dict[int, tuple[int, str]]) -> np.ndarray:
    """Per member, its closest partner and the similarity, e.g. 'jaccard 0.912 with 3fa1...'."""
    position = {record_id: i for i, record_id in enumerate(ids)}
    out = []
    for record_id in member_ids.tolist():
        partner, text = closest.get(position[record_id], (None, None))
        out.append(None if partner is None else f"{text} with {ids[partner]}")
    return np.array(out, dtype=object)


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


# --- partitioned dedup ----------------------------------------------------------------------
# The dedup stage chains these with the engine's shuffles (see pipeline/stages/dedup.py). Records
# are named by `key`: their id as an unsigned 64-bit number (`candidates.id_keys`), in id order.

INFO = [("key", pa.uint64()), ("id", pa.string()), ("label", pa.string()), ("size", pa.int64()), ("exact", pa.string())]
SIGNATURES = {  # the columns of `signatures`, per modality
    "text": pa.schema([*INFO, ("minhash", pa.binary()), ("shingles", pa.binary())]),
    "image": pa.schema([*INFO, ("phash", pa.uint64())]),
}


def signatures(records: pd.DataFrame, modality: str, params: DedupParams, *, seed: int = 0) -> pd.DataFrame:
    """What dedup needs of each record of a partition, computed once: `key`, `id`, `label`,
    `size` (for survivor "longest"), `exact` (the exact-duplicate key) and the near-duplicate
    signature (see `candidates.text_signatures`, `candidates.image_signatures`; MinHash
    permutations from `seed`: 0 in dedup, the certificate's own in split)."""
    near = text_signatures(records, params, seed=seed) if modality == "text" else image_signatures(records, params)
    info = pd.DataFrame({"id": records["id"].to_numpy(object), "label": records["label"].to_numpy(object),
                         "size": record_sizes(records) if len(records) else np.empty(0, np.int64),
                         "exact": exact_key(records, params).to_numpy(object)})
    return pd.concat([near[["key"]], info, near.drop(columns="key")], axis=1)


def exact_clusters(rows: pd.DataFrame, params: DedupParams) -> Processed:
    """Resolve the exact-duplicate clusters among rows sorted by `exact`, then `key` (a shuffle
    partition: every record of a key is here): a cluster is named by its smallest key."""
    shared = rows["exact"].duplicated(keep=False).to_numpy()
    members = rows.loc[shared, ["key", "id", "label", "size", "exact"]]
    members = members.assign(cluster=members.groupby("exact", sort=False)["key"].transform("first"), detail=None)
    return resolve_members(members.drop(columns="exact"), params, reason="exact_duplicate")


def without(table: pd.DataFrame, removed: pd.DataFrame) -> pd.DataFrame:
    """`table`'s rows whose `key` is not among `removed`'s."""
    return table[~np.isin(table["key"].to_numpy(np.uint64), removed["key"].to_numpy(np.uint64))]


def partner_rows(pairs: pd.DataFrame, modality: str) -> pd.DataFrame:
    """Each verified pair seen from both ends: `node`, `partner`, `rank` (lower is closer) and the
    pair itself (`a`, `b`), so that a node's closest partner is its first row in that order."""
    a, b = pairs["a"].to_numpy(np.uint64), pairs["b"].to_numpy(np.uint64)
    if modality == "text":
        rank, text = -pairs["similarity"].to_numpy(np.float64), [f"jaccard {s:.3f}" for s in pairs["similarity"]]
    else:
        rank, text = pairs["distance"].to_numpy(np.float64), [f"hamming {d}" for d in pairs["distance"]]
    return pd.DataFrame({"node": np.concatenate((a, b)), "partner": np.concatenate((b, a)), "rank": np.concatenate((rank, rank)),
                         "a": np.concatenate((a, a)), "b": np.concatenate((b, b)), "text": text + text})


def closest_partners(rows: pd.DataFrame) -> pd.DataFrame:
    """`key` and `detail` ("jaccard 0.912 with <id>") of each node, from rows sorted by node, rank, a, b."""
    first = rows.drop_duplicates("node")
    details = [f"{t} with {int(p):016x}" for t, p in zip(first["text"], first["partner"])]
    return pd.DataFrame({"key": first["node"].to_numpy(np.uint64), "detail": details})


def cluster_members(info: pd.DataFrame, labels: pd.DataFrame, closest: pd.DataFrame) -> pd.DataFrame:
    """The records of `info` that have a cluster `label` (its `root`), with their closest partner's detail."""
    members = info.merge(labels.rename(columns={"root": "cluster"}), on="key", how="inner")
    return members.merge(closest, on="key", how="left")[["cluster", "key", "id", "label", "size", "detail"]]


def repoint(earlier: pd.DataFrame, later_merged: pd.DataFrame) -> pd.DataFrame:
    """`follow_merges` on fate rows (`earlier`, with `target`: the key of `into`) and the later pass's
    merged rows (`key`, `into`) that reach here."""
    fates = Fates(earlier.drop(columns="target").reset_index(drop=True))
    later = Fates.merged(key_ids(later_merged["key"]), later_merged["into"], "later")
    return follow_merges(fates, later).frame


def merged_targets(fates: pd.DataFrame) -> pd.DataFrame:
    """Fate rows with `target`: the key of the record they merged into (their own for other fates)."""
    into = fates["into"].where(fates["fate"] == "merged", fates["id"])
    return fates.assign(target=id_keys(into))


def merged_keys(fates: pd.DataFrame) -> pd.DataFrame:
    """`key` and `into` of the merged rows among fates."""
    merged = fates[fates["fate"] == "merged"]
    return pd.DataFrame({"key": id_keys(merged["id"]), "into": merged["into"].to_numpy(object)})


def final_records(records: pd.DataFrame, removed: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """The records not `removed`, each with `group_id`: the id of its group's root (its own if alone)."""
    kept = records[~np.isin(id_keys(records["id"]), removed["key"].to_numpy(np.uint64))]
    root = dict(zip(groups["key"].tolist(), groups["root"].tolist()))
    keys = id_keys(kept["id"])
    return kept.assign(group_id=[f"{root[k]:016x}" if k in root else i for k, i in zip(keys.tolist(), kept["id"])])
