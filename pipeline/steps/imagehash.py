"""Perceptual image hashes and near-duplicate search by Hamming distance.

A perceptual hash maps a picture to 64 bits that barely change when it is re-encoded, resized or
slightly re-lit. pHash thresholds the lowest 8x8 DCT frequencies of a 32x32 grey image at their
median; dHash compares horizontally neighbouring pixels of a 9x8 grey image. Bits are packed
row-major, first bit most significant.

`near_pairs` returns exactly the pairs that `brute_force_pairs` returns (all pairs within a
Hamming distance) without comparing every pair, by multi-index hashing: the 64 bits are split
into chunks, each chunk is searched within a small radius through a bucket table, and the
candidates are verified on the full hash.
"""
from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from PIL import Image, ImageOps

from pipeline.steps.pixels import pillow_pixel_guard_off

Method = Literal["phash", "dhash"]
METHODS = ("phash", "dhash")
BATCH = 1 << 22  # candidate pairs verified at once: bounds memory to ~100 MB
MAX_PROBES = 100_000  # bucket probes per hash that an explicit chunk count may ask for
DENSE_BITS = 22  # chunks up to this width get a direct-address bucket table, wider ones a binary search


# --- hashing --------------------------------------------------------------------------------

def hash_image(image: bytes | Image.Image, *, method: Method = "phash") -> int:
    """The 64-bit perceptual hash of encoded bytes or a PIL image, as a Python int."""
    return int.from_bytes(np.packbits(_hash_bits(_grey(image), method)).tobytes(), "big")


def hash_images(images: Sequence[bytes | Image.Image], *, method: Method = "phash") -> np.ndarray:
    """`hash_image` over a chunk, as a uint64 array in input order."""
    _check_method(method)
    bits = np.array([_hash_bits(_grey(image), method) for image in images], dtype=bool).reshape(-1, 64)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (int(a) ^ int(b)).bit_count()


def _grey(image: bytes | Image.Image) -> Image.Image:
    """8-bit grey pixels, EXIF orientation applied (encoded bytes only: a PIL image is taken as is)."""
    if isinstance(image, Image.Image):
        return image.convert("L")
    with pillow_pixel_guard_off(), Image.open(io.BytesIO(image)) as opened:  # clean refuses pixel bombs first
        return ImageOps.exif_transpose(opened).convert("L")


def _hash_bits(grey: Image.Image, method: str) -> np.ndarray:
    _check_method(method)
    if method == "dhash":
        pixels = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
        return (pixels[:, 1:] > pixels[:, :-1]).ravel()
    pixels = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)
    low = cv2.dct(pixels)[:8, :8]
    return (low > np.median(low)).ravel()


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter of hash_image must be 'phash' or 'dhash'. Got {method!r} instead.")


# --- near-duplicate search ------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class Chunk:
    """A run of `width` bits starting `shift` bits from the right, searched within `radius` bits."""

    shift: int
    width: int
    radius: int


def plan_chunks(n: int, threshold: int, *, chunks: int | None = None) -> list[Chunk]:
    """Chunks whose radii guarantee that every pair within `threshold` is found.

    If every chunk k differed by more than its radius r_k, the hashes would differ by at least
    sum(r_k + 1) = threshold + 1 bits, so some chunk is within its radius. With `chunks` equal
    to threshold + 1 every radius is 0 (exact chunk matches, the classic pigeonhole); by default
    the number of chunks minimises the expected work for `n` uniformly spread hashes.
    """
    _check_threshold(threshold)
    if chunks is not None:
        if not isinstance(chunks, int) or not 1 <= chunks <= 64:
            raise ValueError(
                f"The 'chunks' parameter of plan_chunks must be an int in [1, 64]. Got {chunks!r} instead.")
        plan = _layout(chunks, threshold)
        if sum(_volume(c) for c in plan) > MAX_PROBES:
            raise ValueError(f"The 'chunks' parameter of plan_chunks is too small for threshold {threshold}: "
                             f"more than {MAX_PROBES} probes per hash. Got {chunks} instead.")
        return plan
    return min((_layout(m, threshold) for m in range(1, min(threshold + 1, 64) + 1)), key=lambda p: _cost(p, n))


def near_pairs(hashes: Sequence[int] | np.ndarray, threshold: int, *, chunks: int | None = None) -> np.ndarray:
    """All pairs of hashes within `threshold` differing bits, by multi-index hashing.

    Returns an int64 array of shape (k, 3) with rows (i, j, distance), i < j indexing `hashes`,
    sorted by (i, j): the same array as `brute_force_pairs`.
    """
    values = _as_hashes(hashes)
    if len(values) < 2:
        _check_threshold(threshold)
        return _unique_pairs(values, [])
    found = [_verify(values, left, right, threshold)
             for chunk in plan_chunks(len(values), threshold, chunks=chunks)
             for left, right in _chunk_candidates(values, chunk)]
    return _unique_pairs(values, found)


def brute_force_pairs(hashes: Sequence[int] | np.ndarray, threshold: int, *, block: int = 64) -> np.ndarray:
    """All pairs within `threshold`, comparing every pair (XOR and popcount by row blocks); a reference."""
    _check_threshold(threshold)
    values = _as_hashes(hashes)
    found = []
    for start in range(0, len(values), block):
        rows = values[start:start + block]
        close = np.bitwise_count(rows[:, None] ^ values[None, start:]) <= threshold
        i, j = np.nonzero(np.triu(close, k=1))
        found.append(np.stack([i + start, j + start]))
    return _unique_pairs(values, [(f[0], f[1]) for f in found])


def _layout(m: int, threshold: int) -> list[Chunk]:
    widths = [64 // m + (k < 64 % m) for k in range(m)]
    spare = max(threshold - m + 1, 0)
    radii = [spare // m + (k < spare % m) for k in range(m)]
    shifts = [64 - sum(widths[:k + 1]) for k in range(m)]
    return [Chunk(s, w, r) for s, w, r in zip(shifts, widths, radii)]


def _cost(plan: list[Chunk], n: int) -> float:
    """Expected probes plus candidate pairs (weighted) for `n` uniformly spread hashes."""
    n, total = max(n, 2), 0.0
    for chunk in plan:
        volume = _volume(chunk)
        probes = n * (1 + (volume - 1) / 2) * (1 if chunk.width <= DENSE_BITS else 4)
        total += probes + 2 * n * n / 2 * volume / 2.0 ** chunk.width
    return total


def _volume(chunk: Chunk) -> int:
    """Bit patterns within the chunk's radius of a given one (the probes per hash)."""
    return sum(math.comb(chunk.width, k) for k in range(chunk.radius + 1))


def _chunk_candidates(values: np.ndarray, chunk: Chunk) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs whose chunks are within the chunk's radius, each unordered pair once, in batches."""
    keys = (values >> np.uint64(chunk.shift)) & np.uint64((1 << chunk.width) - 1)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    ends = _group_ends(sorted_keys)
    positions = np.arange(len(keys))
    yield from _expand(order, positions + 1, ends - positions - 1, order)  # same bucket, later in it
    table = _BucketTable(sorted_keys, chunk.width)
    for mask in _masks(chunk.width, chunk.radius):
        top = np.uint64(1 << (int(mask).bit_length() - 1))
        queries = np.flatnonzero((keys & top) == 0)  # the other side of each pair has the top bit set
        starts, counts = table.lookup(keys[queries] ^ mask)
        yield from _expand(queries, starts, counts, order)


def _masks(width: int, radius: int) -> Iterator[np.uint64]:
    """Every non-zero bit mask of `width` bits with at most `radius` bits set."""
    for k in range(1, radius + 1):
        for bits in itertools.combinations(range(width), k):
            yield np.uint64(sum(1 << b for b in bits))


def _group_ends(sorted_keys: np.ndarray) -> np.ndarray:
    """For each position in `sorted_keys`, the end (exclusive) of its run of equal keys."""
    bounds = np.append(np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1, len(sorted_keys))
    return np.repeat(bounds, np.diff(bounds, prepend=0))


class _BucketTable:
    """Where each key's run starts in the sorted keys, and how long it is."""

    def __init__(self, sorted_keys: np.ndarray, width: int) -> None:
        self.sorted_keys = sorted_keys
        self.dense = width <= DENSE_BITS
        if self.dense:
            self.counts = np.bincount(sorted_keys.astype(np.intp), minlength=1 << width)
            self.starts = np.cumsum(self.counts) - self.counts

    def lookup(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.dense:
            index = targets.astype(np.intp)
            return self.starts[index], self.counts[index]
        starts = np.searchsorted(self.sorted_keys, targets, side="left")
        return starts, np.searchsorted(self.sorted_keys, targets, side="right") - starts


def _expand(left: np.ndarray, starts: np.ndarray, counts: np.ndarray, order: np.ndarray,
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs (left[q], order[starts[q] + k]) for k < counts[q], in batches of about BATCH pairs."""
    keep = counts > 0
    left, starts, counts = left[keep], starts[keep], counts[keep]
    totals = np.cumsum(counts)
    cuts = np.searchsorted(totals, np.arange(BATCH, int(totals[-1]) if len(totals) else 0, BATCH), side="right")
    for lo, hi in itertools.pairwise([0, *np.unique(cuts).tolist(), len(counts)]):
        if hi > lo:
            yield _ragged(left[lo:hi], starts[lo:hi], counts[lo:hi], order)


def _ragged(left: np.ndarray, starts: np.ndarray, counts: np.ndarray, order: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum(counts) - counts
    within = np.arange(int(counts.sum())) - np.repeat(offsets, counts)
    return np.repeat(left, counts), order[np.repeat(starts, counts) + within]


def _verify(values: np.ndarray, left: np.ndarray, right: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    close = np.bitwise_count(values[left] ^ values[right]) <= threshold
    return left[close], right[close]


def _unique_pairs(values: np.ndarray, found: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Rows (i, j, distance) with i < j, each pair once, sorted by (i, j)."""
    n = np.int64(len(values))
    codes = [np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b) for a, b in found if len(a)]
    codes = np.unique(np.concatenate(codes)) if codes else np.empty(0, np.int64)
    i, j = np.divmod(codes, n) if len(values) else (codes, codes)
    return np.stack([i, j, np.bitwise_count(values[i] ^ values[j]).astype(np.int64)], axis=1)


def _as_hashes(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(hashes, dtype=np.uint64).reshape(-1)


def _check_threshold(threshold: int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer) or not 0 <= threshold <= 64:
        raise ValueError(f"The 'threshold' parameter must be an int in [0, 64]. Got {threshold!r} instead.")


# --- clusters -------------------------------------------------------------------------------

def cluster_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of the pair graph (chains included), by union-find.

    Returns an int64 array of length `n`: each item's label is the smallest index in its
    component, so labels do not depend on the order of `pairs`.
    """
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in np.asarray(pairs)[:, :2].tolist():
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


def near_duplicate_groups(ids: Sequence[str], hashes: Sequence[int] | np.ndarray, *, threshold: int) -> list[str]:
    """For each record, the smallest id among the records chained to it within `threshold` bits.

    A record with no near duplicate gets its own id. The result depends only on the (id, hash)
    pairs, not on their order.
    """
    values = _as_hashes(hashes)
    if len(ids) != len(values):
        raise ValueError(f"ids and hashes must have the same length. Got {len(ids)} and {len(values)} instead.")
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    labels = cluster_labels(len(values), near_pairs(values[order], threshold))
    by_rank = [ids[k] for k in order]
    groups = [""] * len(ids)
    for rank, k in enumerate(order.tolist()):
        groups[k] = by_rank[labels[rank]]
    return groups
