"""Near-duplicate candidates and their verification, one partition at a time.

The distributed form of `neardup.near_duplicates` (texts) and `imagehash.near_pairs` (images),
as pandas-in, pandas-out steps that the dedup stage chains with shuffles:

1. `text_signatures` / `image_signatures`: each record's signature, computed once: MinHash values
   and the sorted shingle set (texts), or the perceptual hash (images). Records are named by
   `key`, their id read as an unsigned 64-bit number (ids are 16 hex digits, so keys sort as ids do).
2. `band_rows` (texts): one row per record and LSH band with the band's hash and the record's
   sketch; rows with equal (band, bucket) meet in one partition, where `bucket_pairs` lists every
   pair of each bucket whose sketches (the low byte of each MinHash value) are not far below the
   threshold: most candidates of a large corpus are chance collisions, and they die here.
   `chunk_rows` and `chunk_pairs` (images) do the same with multi-index hash blocks: the 64 bits
   are cut into max_distance + 1 chunks, and two hashes within max_distance bits agree exactly on
   at least one chunk (pigeonhole); a pair is kept in the first chunk it agrees on, so once.
3. `jaccard_pairs` verifies the text candidates on the shingle sets; image pairs are verified on
   the full hash as they are found.

Every result is a function of the records alone, so partitions and workers never change it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.params import DedupParams
from pipeline.steps.imagehash import hash_images
from pipeline.steps.neardup import NearDupSettings, Shingles, _band_keys_columns, _screen, exact_jaccard, minhash_signatures, shingle_sets

BLOCK = 1 << 20  # pairs enumerated at a time in one bucket: bounds memory in buckets of thousands


def id_keys(ids: pd.Series) -> np.ndarray:
    """Record ids (16 hex digits) as unsigned 64-bit numbers, in the same order."""
    return np.array([int(i, 16) for i in ids], dtype=np.uint64)


def key_ids(keys: np.ndarray) -> list[str]:
    """The ids of `id_keys` back."""
    return [f"{int(k):016x}" for k in keys]


# --- signatures -----------------------------------------------------------------------------

def text_signatures(records: pd.DataFrame, params: DedupParams, *, seed: int = 0) -> pd.DataFrame:
    """`key`, `minhash` (num_perm uint32 values, as bytes; permutations from `seed`) and `shingles`
    (the sorted distinct shingle hashes, as bytes) of each text: MinHash of the set equals MinHash
    of the multiset."""
    near = params.text
    sets = shingle_sets(records["text"].tolist(), shingle=near.shingle, size=near.size)
    values = minhash_signatures(sets, num_perm=near.num_perm, seed=seed)
    offsets = sets.offsets
    return pd.DataFrame({
        "key": id_keys(records["id"]),
        "minhash": [row.tobytes() for row in values],
        "shingles": [sets.values[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(records))],
    })


def image_signatures(records: pd.DataFrame, params: DedupParams) -> pd.DataFrame:
    """`key` and `phash` (the 64-bit perceptual hash) of each image."""
    return pd.DataFrame({"key": id_keys(records["id"]), "phash": hash_images(records["image"].tolist(), method=params.image.hash)})


# --- texts: LSH -----------------------------------------------------------------------------

def band_rows(signatures: pd.DataFrame, settings: NearDupSettings, bands: range | None = None) -> pd.DataFrame:
    """One row per record and band (of `bands`, default all): `band`, `bucket` (the band's 64-bit
    hash), `key`, and the record's sketch (the low byte of each MinHash value the banding uses) as
    words `s0`, `s1`, ..., so that a bucket's pairs are screened where they are found."""
    bands = bands if bands is not None else range(settings.bands)
    columns = _minhash_columns(signatures, settings.bands * settings.rows)
    buckets = _band_keys_columns(columns, settings.bands, settings.rows)[bands.start:bands.stop]
    words = _sketch_words(columns)
    n = len(signatures)
    frame = {"band": np.repeat(np.arange(bands.start, bands.stop, dtype=np.int64), n), "bucket": buckets.reshape(-1),
             "key": np.tile(signatures["key"].to_numpy(np.uint64), len(bands))}
    frame.update({f"s{i}": np.tile(words[:, i], len(bands)) for i in range(words.shape[1])})
    return pd.DataFrame(frame)


def bucket_pairs(rows: pd.DataFrame, settings: NearDupSettings) -> pd.DataFrame:
    """Every pair (a < b) of keys sharing a (band, bucket), from rows sorted by band, bucket, key,
    but those whose sketches say they are far below the threshold (`settings.screen`)."""
    keys = rows["key"].to_numpy(np.uint64)
    group = _runs(rows["band"].to_numpy(), rows["bucket"].to_numpy())
    if settings.screen is None:
        return _pairs_within(group, keys)
    words = np.ascontiguousarray(rows[[c for c in rows.columns if c.startswith("s") and c[1:].isdigit()]].to_numpy(np.uint64))
    keep = _screen(words, settings.bands * settings.rows, settings.threshold, settings.screen)
    parts = [_pairs_frame(keys[left[m]], keys[right[m]]) for left, right in _pair_positions(group) if (m := keep(left, right)).any()]
    return pd.concat(parts, ignore_index=True) if parts else _pairs_frame(np.empty(0, np.uint64), np.empty(0, np.uint64))


def _sketch_words(columns: np.ndarray) -> np.ndarray:
    """(n, words) uint64: the low byte of each of the (width, n) MinHash values, zero-padded to whole words."""
    width, n = columns.shape
    padded = np.zeros((n, -(-width // 8) * 8), dtype=np.uint8)
    padded[:, :width] = columns.T.astype(np.uint8)
    return padded.view(np.uint64)


def jaccard_pairs(pairs: pd.DataFrame, settings: NearDupSettings) -> pd.DataFrame:
    """The verified pairs (`a`, `b`, `similarity`) among candidates with `shingles_a`/`shingles_b`
    (or `minhash_a`/`minhash_b` when `verify` is estimate), at or above the threshold."""
    m = len(pairs)
    index = np.column_stack((np.arange(m), np.arange(m, 2 * m)))
    if not m:
        similarity = np.empty(0, np.float64)
    elif settings.verify == "exact":
        similarity = exact_jaccard(_shingles([*pairs["shingles_a"], *pairs["shingles_b"]]), index)
    else:
        values = np.frombuffer(b"".join([*pairs["minhash_a"], *pairs["minhash_b"]]), dtype=np.uint32).reshape(2 * m, -1)
        similarity = (values[:m] == values[m:]).mean(axis=1) if m else np.empty(0)
    verified = pairs[["a", "b"]].assign(similarity=similarity)
    return verified[verified["similarity"] >= settings.threshold].reset_index(drop=True)


def _minhash_columns(signatures: pd.DataFrame, width: int) -> np.ndarray:
    """(width, n) uint32: the first `width` MinHash values of each signature, as columns."""
    if not len(signatures):
        return np.empty((width, 0), dtype=np.uint32)
    values = np.frombuffer(b"".join(signatures["minhash"]), dtype=np.uint32).reshape(len(signatures), -1)
    return np.ascontiguousarray(values[:, :width].T)


def _shingles(blobs: list[bytes]) -> Shingles:
    sizes = np.fromiter((len(b) // 4 for b in blobs), dtype=np.int64, count=len(blobs))
    values = np.frombuffer(b"".join(blobs), dtype=np.uint32) if blobs else np.empty(0, np.uint32)
    return Shingles(values=values, offsets=np.concatenate(([0], np.cumsum(sizes))))


# --- images: multi-index hash blocks --------------------------------------------------------

def chunk_layout(max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of the max_distance + 1 chunks the 64 bits are cut into."""
    count = min(max_distance + 1, 64)
    widths = [64 // count + (k < 64 % count) for k in range(count)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return list(zip(shifts, widths, strict=True))


def chunk_rows(signatures: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """One row per image and chunk: `chunk`, `value` (the chunk's bits), `key` and `phash`."""
    hashes = signatures["phash"].to_numpy(np.uint64)
    layout = chunk_layout(max_distance)
    values = [(hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1) for shift, width in layout]
    n = len(signatures)
    return pd.DataFrame({
        "chunk": np.repeat(np.arange(len(layout), dtype=np.int64), n),
        "value": np.concatenate(values) if values else np.empty(0, np.uint64),
        "key": np.tile(signatures["key"].to_numpy(np.uint64), len(layout)),
        "phash": np.tile(hashes, len(layout)),
    })


def chunk_pairs(rows: pd.DataFrame, max_distance: int) -> pd.DataFrame:
    """Pairs (`a`, `b`, `distance`) within `max_distance` bits among rows sorted by chunk, value,
    key, each kept only in the first chunk on which its two hashes agree."""
    group = _runs(rows["chunk"].to_numpy(), rows["value"].to_numpy())
    keys, hashes, chunks = rows["key"].to_numpy(np.uint64), rows["phash"].to_numpy(np.uint64), rows["chunk"].to_numpy()
    found = [pd.DataFrame({"a": np.empty(0, np.uint64), "b": np.empty(0, np.uint64), "distance": np.empty(0, np.int64)})]
    for left, right in _pair_positions(group):
        distance = np.bitwise_count(hashes[left] ^ hashes[right]).astype(np.int64)
        close = (distance <= max_distance) & _first_agreeing_chunk(hashes[left], hashes[right], chunks[left], max_distance)
        found.append(pd.DataFrame({"a": keys[left][close], "b": keys[right][close], "distance": distance[close]}))
    return pd.concat(found, ignore_index=True)


def _first_agreeing_chunk(x: np.ndarray, y: np.ndarray, chunk: np.ndarray, max_distance: int) -> np.ndarray:
    """Whether no chunk before `chunk` has x and y agreeing (so the pair is counted in this one alone)."""
    first = np.full(len(x), len(chunk_layout(max_distance)), dtype=np.int64)
    for index, (shift, width) in reversed(list(enumerate(chunk_layout(max_distance)))):
        mask = np.uint64((1 << width) - 1)
        same = ((x >> np.uint64(shift)) & mask) == ((y >> np.uint64(shift)) & mask)
        first[same] = index
    return first == chunk


# --- pairs within buckets -------------------------------------------------------------------

def _runs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A number per row, the same along each run of equal (first, second) in sorted rows."""
    if not len(first):
        return np.empty(0, np.int64)
    change = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return np.concatenate(([0], np.cumsum(change))).astype(np.int64)


def _pairs_within(group: np.ndarray, keys: np.ndarray) -> pd.DataFrame:
    """(a, b) for every pair of rows in the same group (rows sorted by group, then key)."""
    parts = [_pairs_frame(keys[left], keys[right]) for left, right in _pair_positions(group)]
    return pd.concat(parts, ignore_index=True) if parts else _pairs_frame(np.empty(0, np.uint64), np.empty(0, np.uint64))


def _pairs_frame(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"a": a.astype(np.uint64), "b": b.astype(np.uint64)})


def _pair_positions(group: np.ndarray):
    """Blocks of (left, right) row positions, left < right, of all pairs within each run of equal groups."""
    n = len(group)
    if n < 2:
        return
    starts = np.flatnonzero(np.concatenate(([True], group[1:] != group[:-1])))
    ends = np.append(starts[1:], n)
    later = np.repeat(ends, ends - starts) - np.arange(n) - 1  # partners after each row in its run
    rows = np.flatnonzero(later)
    begin = 0
    while begin < len(rows):
        cumulative = np.cumsum(later[rows[begin:]])
        stop = begin + max(1, int(np.searchsorted(cumulative, BLOCK, side="right")))
        block = rows[begin:stop]
        counts = later[block]
        left = np.repeat(block, counts)
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        yield left, left + 1 + offsets
        begin = stop
