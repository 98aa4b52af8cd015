"""Leakage certificate: every record that has an exact or near duplicate on another side of the split.

Computed from the content alone, independently of the grouping that made the split: exact
content hashes, plus the near-duplicate search at dedup's merge threshold (MinHash with its own
seed, so an LSH miss in dedup is not repeated here; perceptual hashes are searched exactly).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pipeline.params import DedupParams
from pipeline.steps.vectors import unit_rows

SPLIT_ORDER = ("train", "val", "test")


@dataclass(slots=True)
class Leak:
    """One pair of records on two sides of the split that are the same or nearly the same."""

    split: str
    id: str
    other_split: str
    other_id: str
    kind: str  # exact | near
    similarity: str


def cross_split_pairs(records: pd.DataFrame, splits: pd.Series, modality: str, params: DedupParams, seed: int) -> list[Leak]:
    """Pairs of records in different splits with equal content hashes or within the near threshold."""
    records = records.assign(_split=splits.to_numpy()).sort_values("id", kind="stable").reset_index(drop=True)
    found = {(i, j): ("exact", "identical content") for i, j in _exact_pairs(records)}
    for i, j, similarity in _near_pairs(records, modality, params, seed):
        found.setdefault((i, j), ("near", similarity))
    leaks = [_leak(records, i, j, kind, sim) for (i, j), (kind, sim) in sorted(found.items())]
    return [leak for leak in leaks if leak.split != leak.other_split]


def _exact_pairs(records: pd.DataFrame) -> list[tuple[int, int]]:
    pairs = []
    for _, members in records.groupby("content_hash", sort=True):
        positions = members.index.tolist()
        pairs.extend((a, b) for k, a in enumerate(positions) for b in positions[k + 1 :])
    return pairs


def _near_pairs(records: pd.DataFrame, modality: str, params: DedupParams, seed: int) -> list[tuple[int, int, str]]:
    if len(records) < 2:
        return []
    if modality == "text":
        from pipeline.steps.neardup import NearDupSettings, near_duplicates

        settings = NearDupSettings.from_params(params.text, seed=seed, certify=True)
        result = near_duplicates(records["text"].tolist(), settings)
        return [(int(i), int(j), f"jaccard {s:.3f}") for (i, j), s in zip(result.pairs.tolist(), result.jaccard.tolist())]
    from pipeline.steps.imagehash import hash_images, near_pairs

    pairs = near_pairs(hash_images(records["image"].tolist(), method=params.image.hash), params.image.max_distance)
    return [(int(i), int(j), f"hamming {d}") for i, j, d in pairs.tolist()]


def _leak(records: pd.DataFrame, i: int, j: int, kind: str, similarity: str) -> Leak:
    """The pair with the later split first (the evaluation side), so reports read 'test record X is in train as Y'."""
    a, b = records.iloc[i], records.iloc[j]
    if SPLIT_ORDER.index(a["_split"]) < SPLIT_ORDER.index(b["_split"]):
        a, b = b, a
    return Leak(a["_split"], a["id"], b["_split"], b["id"], kind, similarity)


def exact_cross_pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """Pairs (`a` < `b`) of rows with equal `content_hash` in different splits, from rows sorted by
    content_hash, then key (a shuffle partition: every record of a hash is here)."""
    found = []
    shared = rows[rows["content_hash"].duplicated(keep=False)]  # most hashes are alone: skip them in bulk
    for _, members in shared.groupby("content_hash", sort=True):
        keys, splits = members["key"].to_numpy(np.uint64), members["split"].to_numpy(object)
        i, j = np.triu_indices(len(members), k=1)
        cross = splits[i] != splits[j]
        found.append(pd.DataFrame({"a": keys[i][cross], "b": keys[j][cross]}))
    return pd.concat(found, ignore_index=True) if found else pd.DataFrame({"a": np.empty(0, np.uint64), "b": np.empty(0, np.uint64)})


def cross_split_leaks(exact: pd.DataFrame, near: pd.DataFrame) -> list[Leak]:
    """The certificate's pairs from exact and near pairs that carry both ends' `split_`/`id_` and,
    for near pairs, `similarity` text: pairs in one split dropped, exact before near, in key order."""
    found: dict[tuple[int, int], tuple] = {}
    for frame, kind in ((exact, "exact"), (near, "near")):
        for row in frame.itertuples(index=False):
            similarity = "identical content" if kind == "exact" else row.similarity
            found.setdefault((int(row.a), int(row.b)), (row.split_a, row.id_a, row.split_b, row.id_b, kind, similarity))
    leaks = []
    for _, (split_a, id_a, split_b, id_b, kind, similarity) in sorted(found.items()):
        if split_a == split_b:
            continue
        first, second = ((split_b, id_b), (split_a, id_a)) if SPLIT_ORDER.index(split_a) < SPLIT_ORDER.index(split_b) else \
            ((split_a, id_a), (split_b, id_b))
        leaks.append(Leak(first[0], first[1], second[0], second[1], kind, similarity))
    return leaks


def certificate(leaks: list[Leak], *, method: str, checked: dict[str, int]) -> dict:
    """The leakage certificate: what was checked, how, and every cross-split pair found."""
    by_sides: dict[str, int] = {}
    for leak in leaks:
        key = f"{leak.split}-{leak.other_split}"
        by_sides[key] = by_sides.get(key, 0) + 1
    return {
        "cross_split_pairs": len(leaks),
        "by_splits": dict(sorted(by_sides.items())),
        "records_checked": checked,
        "method": method,
        "pairs": [asdict(leak) for leak in leaks],
    }


def evaluation_side_ids(leaks: list[Leak]) -> set[str]:
    """Ids of val/test records that have a duplicate in an earlier split (the ones to drop, if asked)."""
    return {leak.id for leak in leaks}


def method_text(modality: str, params: DedupParams) -> str:
    """How the certificate was computed, in words, for the report and the file itself."""
    if modality == "text":
        t = params.text
        return (f"exact content hash; MinHash ({t.num_perm} permutations, {t.shingle} {t.size or ('5' if t.shingle == 'char' else '3')}"
                f"-grams, own seed) + LSH at Jaccard {t.threshold}, candidates verified by exact Jaccard")
    return f"exact content hash; {params.image.hash} within {params.image.max_distance} bits, multi-index search (exact)"



# --- semantic leaks -------------------------------------------------------------------------

SEMANTIC_BLOCK = 1_024  # evaluation rows compared with all of train at a time


def semantic_leaks(ids: np.ndarray, splits: np.ndarray, vectors: np.ndarray, threshold: float) -> list[dict]:
    """Every val/test record whose nearest train record (cosine of the embeddings, exact search in
    blocks) reaches `threshold`: its split and id, the train id and the cosine (rounded to 4
    places, and compared so rounded, so the file and the decision agree). Ties: the smaller train
    id. Ordered by split, then id."""
    unit = unit_rows(vectors)
    train = np.flatnonzero(splits == "train")
    train = train[np.argsort(ids[train], kind="stable")]
    found = []
    for split in ("val", "test"):
        rows = np.flatnonzero(splits == split)
        rows = rows[np.argsort(ids[rows], kind="stable")]
        for start in range(0, len(rows) if len(train) else 0, SEMANTIC_BLOCK):
            block = rows[start:start + SEMANTIC_BLOCK]
            cosine = np.round(unit[block] @ unit[train].T, 4)
            nearest = cosine.argmax(axis=1)  # the first maximum: train is in id order
            best = cosine[np.arange(len(block)), nearest]
            for row, j, value in zip(block.tolist(), nearest.tolist(), best.tolist(), strict=True):
                if value >= threshold:
                    found.append({"split": split, "id": str(ids[row]), "other_split": "train", "other_id": str(ids[train[j]]),
                                  "cosine": float(value)})
    return found
