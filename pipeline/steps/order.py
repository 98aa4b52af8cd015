"""The seed's order of a class: a place for every record keyed on the seed and its id alone.

Where a stage must pick k records of a class (the ones that get one variant more, the ones
undersampling keeps), it takes the first k in this order. The k-th is found from counts, not by
gathering the class: each partition counts its records per (class, bucket of the order key), the
counts are summed, the bucket holding the k-th is read back alone (about 1/4096 of the class), and
its (order, id) is the cutoff. Which records come first never depends on partitions or workers.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pipeline.seeding import derive_seed

BUCKET_BITS = 12
Cutoff = tuple[int, str]  # (order key, id) of the last record that comes first
BUCKET_COUNTS = pd.DataFrame({"label": pd.Series(dtype=object), "bucket": pd.Series(dtype="int64"),
                              "n": pd.Series(dtype="int64")})
ORDERED = pd.DataFrame({"label": pd.Series(dtype=object), "order": pd.Series(dtype="uint64"), "id": pd.Series(dtype=object)})


def order_keys(ids: pd.Series, seed: int, namespace: str) -> np.ndarray:
    """Each record's place in the seed's order (uint64, keyed on the seed, `namespace` and the id)."""
    return np.array([derive_seed(seed, namespace, i) for i in ids], dtype=np.uint64)


def bucket_of(order: np.ndarray) -> np.ndarray:
    """The bucket of each order key: its top `BUCKET_BITS` bits (buckets run in the keys' order)."""
    return (np.asarray(order, dtype=np.uint64) >> np.uint64(64 - BUCKET_BITS)).astype(np.int64)


def ordered(records: pd.DataFrame, labels: frozenset[str], seed: int, namespace: str) -> pd.DataFrame:
    """(label, order, id) of the records of `labels`."""
    members = records[records["label"].isin(list(labels))]
    return pd.DataFrame({"label": members["label"].to_numpy(object), "order": order_keys(members["id"], seed, namespace),
                         "id": members["id"].to_numpy(object)})


def bucket_counts(records: pd.DataFrame, *, labels: frozenset[str], seed: int, namespace: str) -> pd.DataFrame:
    """One partition: its records of `labels` counted per (label, bucket of the order key)."""
    rows = ordered(records, labels, seed, namespace)
    rows["bucket"] = bucket_of(rows["order"].to_numpy(np.uint64))
    counts = rows.groupby(["label", "bucket"], sort=True).size()
    return counts.rename("n").reset_index().astype({"n": "int64"}) if len(counts) else BUCKET_COUNTS


def rank_buckets(totals: pd.DataFrame, wanted: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """Per class, the bucket that holds its `wanted`-th record and that record's rank inside it (1-based),
    from the (label, bucket, n) counts summed over every partition."""
    found = {}
    for label, k in sorted(wanted.items()):
        rows = totals[totals["label"] == label].sort_values("bucket")
        if k <= 0 or rows.empty:
            continue
        running = rows["n"].cumsum().to_numpy()
        at = min(int(np.searchsorted(running, k)), len(rows) - 1)
        before = int(running[at - 1]) if at else 0
        found[label] = (int(rows["bucket"].iloc[at]), min(k, int(running[at])) - before)
    return found


def in_buckets(records: pd.DataFrame, *, buckets: Mapping[str, int], seed: int, namespace: str) -> pd.DataFrame:
    """One partition: (label, order, id) of its records in their class's bucket of `buckets`."""
    rows = ordered(records, frozenset(buckets), seed, namespace)
    bucket = bucket_of(rows["order"].to_numpy(np.uint64))
    return rows[bucket == rows["label"].map(buckets).to_numpy(np.int64)].reset_index(drop=True)


def cutoffs_in(rows: pd.DataFrame, ranks: Mapping[str, tuple[int, int]]) -> dict[str, Cutoff]:
    """Per class, the (order, id) of the record at its rank among `rows` (every record of its bucket)."""
    found = {}
    for label, (_, rank) in sorted(ranks.items()):
        members = rows[rows["label"] == label].sort_values(["order", "id"], kind="stable")
        last = members.iloc[rank - 1]
        found[label] = (int(last["order"]), str(last["id"]))
    return found


def cutoffs(records: pd.DataFrame, wanted: Mapping[str, int], seed: int, namespace: str) -> dict[str, Cutoff]:
    """The cutoffs of a set held whole (the engine finds the same from partitions)."""
    wanted = {label: k for label, k in wanted.items() if k > 0}
    totals = bucket_counts(records, labels=frozenset(wanted), seed=seed, namespace=namespace)
    ranks = rank_buckets(totals, wanted)
    buckets = {label: bucket for label, (bucket, _) in ranks.items()}
    return cutoffs_in(in_buckets(records, buckets=buckets, seed=seed, namespace=namespace), ranks)


def first(records: pd.DataFrame, cut: Mapping[str, Cutoff], seed: int, namespace: str) -> np.ndarray:
    """Whether each record comes at or before its class's cutoff (False for a class without one)."""
    result = np.zeros(len(records), dtype=bool)
    if not cut or records.empty:
        return result
    keys = order_keys(records["id"], seed, namespace)
    labels, ids = records["label"].to_numpy(object), records["id"].to_numpy(object)
    for label, (order, last_id) in cut.items():
        members = labels == label
        result |= members & ((keys < np.uint64(order)) | ((keys == np.uint64(order)) & (ids <= last_id)))
    return result
