"""Decontamination: drop every corpus record that copies a record of an evaluation set.

The evaluation sets (params `decontaminate.sets`) are read, cleaned and normalised as the corpus
is, then indexed once (`Reference`): their content hashes, and for near copies their MinHash band
keys and shingle sets (texts) or perceptual hashes (images). Each corpus partition is matched
against that index on its own (a broadcast join, as n-gram decontamination is done at scale), so
the result never depends on how the corpus is partitioned. A record matches when its content is
identical, or its Jaccard similarity reaches dedup's merge threshold (texts, verified exactly),
or its hash is within dedup's Hamming distance (images). A matched record is dropped with the
reason `contaminates:<set>` and a detail naming the evaluation record it copies.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.ledger import Fates, Processed
from pipeline.params import DedupParams
from pipeline.records import source_location
from pipeline.steps.imagehash import hash_images
from pipeline.steps.neardup import (NearDupSettings, Shingles, _concatenated, _ranges, _subset, band_keys, exact_jaccard,
                                    minhash_signatures, shingle_sets)

REASON = "contaminates"
MATCHES = ("id", "set", "detail")


@dataclass(slots=True, frozen=True)
class Reference:
    """The evaluation sets' usable records, indexed: set name and source location of each, first
    index of each content hash, and the near-copy signatures of `modality`."""

    modality: str
    sets: np.ndarray  # object, the set of each reference record
    where: np.ndarray  # object, file:line (or file) of each reference record
    first_of_hash: dict[str, int]
    text: NearDupSettings | None = None
    sorted_keys: np.ndarray | None = None  # (bands, m) uint64 band keys, each band sorted
    key_order: np.ndarray | None = None  # (bands, m): the reference record of each sorted key
    shingles: Shingles | None = None
    phash: np.ndarray | None = None  # (m,) uint64
    hash_method: str = "phash"
    max_distance: int = 0

    def __len__(self) -> int:
        return len(self.sets)


def build_reference(evaluation: list[tuple[str, pd.DataFrame]], modality: str, params: DedupParams,
                    settings: NearDupSettings | None) -> Reference:
    """The index of the normalised records of each named evaluation set, sets in the order given,
    records by id within a set (so the first record of a hash is always the same one); `settings`
    None: exact content only."""
    frames = [records.sort_values("id", kind="stable").assign(_set=name) for name, records in evaluation]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"id": [], "content_hash": [], "_set": []})
    first: dict[str, int] = {}
    for index, content_hash in enumerate(table["content_hash"].tolist()):
        first.setdefault(content_hash, index)
    common = dict(modality=modality, sets=table["_set"].to_numpy(object), first_of_hash=first,
                  where=source_location(table).to_numpy(object) if len(table) else np.empty(0, object))
    if settings is None or not len(table):
        return Reference(**common)
    if modality == "image":
        return Reference(**common, phash=hash_images(table["image"].tolist(), method=params.image.hash),
                         hash_method=params.image.hash, max_distance=params.image.max_distance)
    shingles = shingle_sets(table["text"].tolist(), shingle=settings.shingle, size=settings.k)
    keys = _band_keys(shingles, settings)
    order = np.argsort(keys, axis=1, kind="stable")
    return Reference(**common, text=settings, shingles=shingles, sorted_keys=np.take_along_axis(keys, order, axis=1),
                     key_order=order)


def matches(records: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """One row (`id`, `set`, `detail`) per record of `records` that copies a reference record: an
    exact copy first, else the most similar near copy (ties: the earlier reference record)."""
    if not len(reference) or not len(records):
        return pd.DataFrame({c: pd.Series(dtype="str") for c in MATCHES})
    found = _exact(records, reference)
    rest = np.setdiff1d(np.arange(len(records)), found[0] if len(found[0]) else np.empty(0, np.int64))
    near = _near(records.iloc[rest], reference) if reference.text is not None or reference.phash is not None else None
    rows, refs, details = list(found[0]), list(found[1]), ["identical content"] * len(found[0])
    if near is not None:
        rows += rest[near[0]].tolist()
        refs += near[1].tolist()
        details += near[2]
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    rows, refs, details = (np.asarray(rows, dtype=np.int64)[order], np.asarray(refs, dtype=np.int64)[order],
                           [details[k] for k in order])
    return pd.DataFrame({
        "id": records["id"].to_numpy(object)[rows],
        "set": reference.sets[refs],
        "detail": [f"{where} ({how})" for where, how in zip(reference.where[refs], details, strict=True)],
    }, columns=list(MATCHES)).astype("str")


def decontaminate_partition(records: pd.DataFrame, reference: Reference) -> Processed:
    """A partition without its records that copy an evaluation record, each dropped with the
    reason `contaminates:<set>`. Counts: `contaminates:<set>` per set."""
    found = matches(records, reference)
    fates = Fates.dropped(found["id"], [f"{REASON}:{name}" for name in found["set"]], found["detail"])
    kept = records[~records["id"].isin(found["id"])]
    return Processed(kept, fates, Counter(f"{REASON}:{name}" for name in found["set"]))


# --- matching -------------------------------------------------------------------------------

def _exact(records: pd.DataFrame, reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    """Positions of records whose content hash a reference record has, and that record's index."""
    refs = np.array([reference.first_of_hash.get(h, -1) for h in records["content_hash"].tolist()], dtype=np.int64)
    rows = np.flatnonzero(refs >= 0)
    return rows, refs[rows]


def _near(records: pd.DataFrame, reference: Reference) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(positions, reference indices, similarity texts) of each record's best near copy."""
    if not len(records):
        return np.empty(0, np.int64), np.empty(0, np.int64), []
    if reference.modality == "image":
        return _near_images(records, reference)
    return _near_texts(records, reference)


def _near_texts(records: pd.DataFrame, reference: Reference) -> tuple[np.ndarray, np.ndarray, list[str]]:
    settings = reference.text
    shingles = shingle_sets(records["text"].tolist(), shingle=settings.shingle, size=settings.k)
    pairs = _shared_band_pairs(_band_keys(shingles, settings), reference)
    candidates, at = np.unique(pairs[:, 1], return_inverse=True)  # only the reference records some pair needs
    both = _concatenated([shingles, _subset(reference.shingles, candidates)])
    similarity = exact_jaccard(both, np.column_stack([pairs[:, 0], at.ravel() + len(shingles)]))
    close = np.flatnonzero(similarity >= settings.threshold)
    best = close[_best(pairs[close], -similarity[close])]
    return pairs[best, 0], pairs[best, 1], [f"jaccard {value:.3f}" for value in similarity[best].tolist()]


def _near_images(records: pd.DataFrame, reference: Reference) -> tuple[np.ndarray, np.ndarray, list[str]]:
    hashes = hash_images(records["image"].tolist(), method=reference.hash_method)
    rows, refs, distances = [], [], []
    for start in range(0, len(hashes), 256):  # (256, m) distances at a time
        block = np.bitwise_count(hashes[start:start + 256, None] ^ reference.phash[None, :])
        i, j = np.nonzero(block <= reference.max_distance)
        rows.append(i + start)
        refs.append(j)
        distances.append(block[i, j].astype(np.int64))
    pairs, distances = np.column_stack([np.concatenate(rows), np.concatenate(refs)]), np.concatenate(distances)
    best = _best(pairs, distances)
    return pairs[best, 0], pairs[best, 1], [f"hamming {value}" for value in distances[best].tolist()]


def _best(pairs: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices into `pairs` of, per distinct first column, the pair of least `cost` (ties: the
    smallest second column), in order of the first column."""
    order = np.lexsort((pairs[:, 1], cost, pairs[:, 0]))
    first = np.concatenate(([True], pairs[order[1:], 0] != pairs[order[:-1], 0])) if len(order) else np.empty(0, bool)
    return order[first]


def _band_keys(shingles: Shingles, settings: NearDupSettings) -> np.ndarray:
    signatures = minhash_signatures(shingles, num_perm=settings.num_perm, seed=settings.seed)
    return band_keys(signatures[:, :settings.bands * settings.rows], settings.bands, settings.rows)


def _shared_band_pairs(keys: np.ndarray, reference: Reference) -> np.ndarray:
    """(k, 2) distinct (record, reference record) pairs sharing a band key in some band, sorted."""
    found = []
    for band, sorted_keys in enumerate(reference.sorted_keys):
        lo = np.searchsorted(sorted_keys, keys[band], side="left")
        counts = np.searchsorted(sorted_keys, keys[band], side="right") - lo
        rows = np.repeat(np.arange(keys.shape[1]), counts)
        found.append(np.column_stack([rows, reference.key_order[band][_ranges(lo, counts)]]))
    pairs = np.concatenate(found).astype(np.int64) if found else np.empty((0, 2), np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs
