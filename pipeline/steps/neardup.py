"""Near-duplicate texts: shingles, MinHash, LSH banding, verified pairs and clusters.

The whole step is vectorised with numpy over chunks of documents, so it needs no compiled code:

1. Texts are case-folded (pyarrow's ASCII kernels, `str.casefold` for the rest) and laid end to
   end in one code-point buffer; words are split there as `str.split()` splits them; k-grams of
   characters (or of word hashes) are hashed to 32 bits with a polynomial over the buffer and a
   murmur finaliser. Each document's sorted unique shingles (its set) are kept.
2. MinHash applies `num_perm` random affine bijections of the 32-bit space (`a * x + b mod 2**32`,
   `a` odd), drawn from `rng(seed, "minhash")`, and keeps the minimum per document
   (`np.minimum.reduceat`) over its set: the minimum over the set is the minimum over all its
   shingles. Every value depends on one document alone, so signatures do not change with
   document order or chunk size.
3. LSH hashes each band of `rows` values to 64 bits; documents that share a band hash are
   candidate pairs.
4. Candidates are screened band by band with a sketch (the low byte of every signature value): a pair
   whose estimated Jaccard lies more than `screen` standard deviations below the threshold is
   dropped before verification. On large corpora most candidates are chance collisions of
   unrelated texts (their number grows with the square of the corpus), so this keeps the
   expensive verification proportional to the real near duplicates.
5. The rest are verified by the exact Jaccard of their kept shingle sets (or the signature
   estimate) against the threshold, and union-find over the verified pairs gives the clusters,
   each named by its smallest member index.

Shingle hashes are 32-bit, so "exact" Jaccard is exact up to hash collisions (about 2**-32 per
pair of distinct shingles), as with datasketch's default 32-bit hashing.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.params import TextNearParams
from pipeline.seeding import rng

log = logging.getLogger(__name__)

ShingleKind = Literal["char", "word"]
VerifyKind = Literal["exact", "estimate"]
DEFAULT_SIZE = {"char": 5, "word": 3}
_BASE = np.uint32(0x01000193)  # odd polynomial base (the FNV prime)
_BLOCK = 8_192  # shingles per MinHash block: 128 x 8k uint32 values stay in cache
_CELLS = 1 << 18  # matrix cells per block of rows sorted at once (sets, intersections)
_PAIRS = 1 << 14  # candidate pairs screened at once: their sketch rows stay in cache
_PAD = np.uint32(0xFFFFFFFF)  # pads rows of sorted values: it sorts last
# Where `str.split()` splits, per code point up to U+3000 (none lies past it), NUL included.
_SPACE = np.array([c == 0 or chr(c).isspace() for c in range(0x3001)])


LSH_WEIGHTS = (0.1, 0.9)  # (false positive, false negative) weights of the banding choice: verification follows, so favour recall


@dataclass(slots=True, frozen=True)
class NearDupSettings:
    """One pass of the search, resolved from the validated `dedup.text` section by `from_params`.

    The section is the one definition of what a user may set (and where it is checked); this adds
    what a pass needs beyond it and fixes the banding.

    Attributes:
        threshold: Jaccard similarity at or above which two texts are near duplicates.
        num_perm: MinHash permutations per signature.
        shingle: "char" k-grams or "word" k-grams of the case-folded text; k: their length.
        bands, rows: the LSH banding in use.
        verify: "exact" Jaccard of the shingle sets, or the "estimate" from the signatures.
        seed: permutations come from `rng(seed, "minhash")`.
        screen: how many standard deviations of the MinHash estimate below the threshold a
            candidate's sketch estimate may fall and still be verified (4: a pair at the
            threshold is lost about 3 times in 100,000); None verifies every candidate.
        chunk_size: documents shingled and hashed at a time (memory, not results).
    """

    threshold: float
    num_perm: int
    shingle: ShingleKind
    k: int
    bands: int
    rows: int
    verify: VerifyKind = "exact"
    seed: int = 0
    screen: float | None = 4.0
    chunk_size: int = 20_000

    @classmethod
    def from_params(cls, near: TextNearParams, *, seed: int = 0, loose: bool = False, certify: bool = False,
                    screen: float | None = 4.0, chunk_size: int = 20_000) -> NearDupSettings:
        """The pass at the merge threshold; `loose`: at the group threshold; `certify`: the leakage
        certificate's (exact verification). Both of those choose their own banding."""
        threshold = near.group_threshold if loose else near.threshold
        explicit = near.bands is not None and not (loose or certify)
        bands, rows = (near.bands, near.rows) if explicit else optimal_bands(threshold, near.num_perm, weights=LSH_WEIGHTS)
        return cls(threshold=threshold, num_perm=near.num_perm, shingle=near.shingle, k=near.size or DEFAULT_SIZE[near.shingle],
                   bands=bands, rows=rows, verify="exact" if certify else near.verify, seed=seed, screen=screen,
                   chunk_size=chunk_size)


@dataclass(slots=True)
class Shingles:
    """Hashed shingles of n documents: document i owns `values[offsets[i]:offsets[i + 1]]`.

    Every document has at least one shingle. From `shingle_sets` the values of each document are
    sorted and unique.
    """

    values: np.ndarray  # uint32
    offsets: np.ndarray  # int64, n + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sizes(self) -> np.ndarray:
        """Shingles per document."""
        return np.diff(self.offsets)


@dataclass(slots=True)
class NearDupResult:
    """Verified near-duplicate pairs and the clusters they chain into.

    Attributes:
        labels: per document, the smallest index of its cluster (its own index when alone).
        pairs: (m, 2) int64 verified pairs (i < j), sorted.
        jaccard: (m,) float64 similarity of each pair (exact or estimated, per `verify`).
        candidates: candidate pairs produced by LSH before verification.
        bands, rows: the banding used.
    """

    labels: np.ndarray
    pairs: np.ndarray
    jaccard: np.ndarray
    candidates: int
    bands: int
    rows: int

    def clusters(self) -> list[list[int]]:
        """Member indices of every cluster with two or more documents, ordered by smallest member."""
        return clusters_from_labels(self.labels)


# --- shingles -------------------------------------------------------------------------------

def shingle_hashes(texts: Sequence[str], *, shingle: ShingleKind = "char", size: int | None = None) -> Shingles:
    """Hashed k-grams per document, in text order, duplicates kept (what MinHash needs).

    Texts are case-folded first (`str.casefold`); words are what `str.split()` gives, NUL also
    separating them. A text shorter than k gives one shingle of the whole text (the empty text
    included), so every document has at least one shingle.
    """
    k = size or DEFAULT_SIZE[shingle]
    if len(texts) == 0:
        return Shingles(values=np.empty(0, np.uint32), offsets=np.zeros(1, np.int64))
    if shingle == "char":
        return _kgrams(*_folded_code_points(texts, pad=k), k)
    words, counts = _word_tokens(*_folded_code_points(texts, pad=1))
    return _kgrams(_padded(words, counts, k), counts, k)


def shingle_sets(texts: Sequence[str], *, shingle: ShingleKind = "char", size: int | None = None) -> Shingles:
    """Sorted unique hashed shingles per document (for exact Jaccard)."""
    return _unique_per_doc(shingle_hashes(texts, shingle=shingle, size=size))


def _folded_code_points(texts: Sequence[str], *, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Code points of the case-folded texts, each followed by `pad` NULs, and the texts' lengths.

    The code points are uint8 when every text is ASCII (the bytes themselves), else uint32.
    """
    data, offsets, ascii = _folded_utf8(texts, pad)
    if not ascii:
        data, offsets = _decode_utf8(data, offsets)
    return data, np.diff(offsets) - pad


def _folded_utf8(texts: Sequence[str], pad: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """UTF-8 of the case-folded texts, each followed by `pad` NULs, its offsets (n + 1), and whether all are ASCII.

    pyarrow's ASCII kernels fold the ASCII texts (most of them) at C speed; `str.casefold` folds
    the others, where it differs from lowering ("ß" -> "ss").
    """
    array = pa.array(texts, type=pa.large_string())
    if array.null_count:
        raise TypeError(f"Texts must be str; got None at index {pc.index(pc.is_null(array), True).as_py()}.")
    ascii = pc.string_is_ascii(array).to_numpy(zero_copy_only=False)
    folded = pc.ascii_lower(array)
    others = np.flatnonzero(~ascii).tolist()
    if others:
        refolded = pa.array([texts[i].casefold() for i in others], type=pa.large_string())
        folded = pc.replace_with_mask(folded, pa.array(~ascii), refolded)
    nuls, nothing = pa.scalar("\0" * pad, pa.large_string()), pa.scalar("", pa.large_string())
    padded = pc.binary_join_element_wise(folded, nuls, nothing)
    _, offsets, data = padded.buffers()
    offsets = np.frombuffer(offsets, np.int64)[padded.offset:padded.offset + len(padded) + 1]
    data = np.frombuffer(data, np.uint8)[offsets[0]:offsets[-1]]
    return data, offsets - offsets[0], not others


def _decode_utf8(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint32 code points of valid UTF-8 `data`, and byte `offsets` as code point offsets."""
    lead = (data & 0xC0) != 0x80  # continuation bytes are 10xxxxxx
    starts = np.flatnonzero(lead)
    codes = data[starts].astype(np.uint32)
    wide = np.flatnonzero(codes >= 0x80)
    first, at = codes[wide], starts[wide]
    extra = 1 + (first >= 0xE0).astype(np.int8) + (first >= 0xF0)  # continuation bytes
    value = first & np.array([0, 0x1F, 0x0F, 0x07], np.uint32)[extra]
    for t in range(1, 4):
        more = np.flatnonzero(extra >= t)
        value[more] = (value[more] << 6) | (data[at[more] + t] & 0x3F)
    codes[wide] = value
    return codes, np.concatenate(([0], np.cumsum(lead)))[offsets]


def _word_tokens(codes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 32-bit hash per word (a maximal run of non-space code points), and each text's word count.

    `codes` holds each text followed by one NUL (a space), so no word runs across texts.
    """
    edges = np.flatnonzero(np.diff(_is_space(codes), prepend=True))  # word begins and ends, alternately
    if edges.size == 0:
        return np.empty(0, np.uint32), np.zeros(len(lengths), np.int64)
    begins, sizes = edges[0::2], edges[1::2] - edges[0::2]
    step = np.ones(codes.size, np.int32)
    step[begins] = 1 - np.diff(begins, prepend=0)
    position = np.cumsum(step, dtype=np.int32) - 1  # since the last word begin; past a word's end it does not matter
    weighted = codes * np.take(_position_weights(int(sizes.max())), position, mode="clip")
    # The sum and the finaliser run in 64 bits (numpy's reduceat widened uint32 sums when these
    # hashes were fixed) and the low 32 bits are kept: published results depend on these values.
    sums = np.add.reduceat(weighted, edges, dtype=np.uint64)[0::2]
    words = _fmix32(sums ^ (sizes.astype(np.uint64) * np.uint64(0x9E3779B9))).astype(np.uint32)
    bounds = np.concatenate(([0], np.cumsum(lengths + 1)))
    return words, np.diff(np.searchsorted(begins, bounds))


def _is_space(codes: np.ndarray) -> np.ndarray:
    """Where `str.split()` splits, per code point, NUL included."""
    space = codes <= 32
    odd = codes < 32 if codes.dtype == np.uint8 else (codes < 32) | ((codes >= 0x85) & (codes <= 0x3000))
    at = np.flatnonzero(odd)
    space[at] = _SPACE[codes[at]]
    return space


def _position_weights(n: int) -> np.ndarray:
    """Odd 32-bit multipliers for character positions 0..n-1 in a word (a fixed function of position)."""
    return _fmix32(np.arange(n, dtype=np.uint32) * np.uint32(0x9E3779B9) + np.uint32(0x7F4A7C15)) | np.uint32(1)


def _padded(tokens: np.ndarray, lengths: np.ndarray, k: int) -> np.ndarray:
    """uint32 tokens (code points or word hashes) of each document followed by k zeros."""
    padded = np.zeros(tokens.size + k * len(lengths), dtype=np.uint32)
    padded[np.arange(tokens.size) + k * np.repeat(np.arange(len(lengths)), lengths)] = tokens
    return padded


def _kgrams(padded: np.ndarray, lengths: np.ndarray, k: int) -> Shingles:
    """Hash every window of k tokens that starts inside a document (one window when shorter than k)."""
    windows = padded.size - k + 1
    h = padded[:windows].astype(np.uint32)
    for t in range(1, k):
        h *= _BASE
        h += padded[t:t + windows]
    counts = np.maximum(lengths - k + 1, 1)
    blocks = np.column_stack((counts, lengths + k - counts)).ravel()
    keep = np.repeat(np.tile(np.array([True, False]), len(lengths)), blocks)[:windows]
    offsets = np.concatenate(([0], np.cumsum(counts)))
    return Shingles(values=_fmix32(h[keep]), offsets=offsets)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """Murmur3's 32-bit finaliser: every input bit affects every output bit."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values: as `np.unique`, whose hash-based path in numpy 2.4 is far slower."""
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if ordered.size else ordered


def _unique_per_doc(shingles: Shingles) -> Shingles:
    """Each document's values sorted, repeats dropped.

    Documents are sorted as the rows of padded matrices of similar widths: numpy sorts many short
    rows far faster than one long array of (document, value) keys. A row is a window of the values
    starting at its document, the part past the document overwritten with padding.
    """
    sizes = shingles.sizes()
    padded = np.concatenate((shingles.values, np.full(int(sizes.max(initial=1)), _PAD)))
    kept, found = np.empty(len(sizes), np.int64), []
    for width, docs in _row_blocks(sizes):
        rows = sliding_window_view(padded, width)[shingles.offsets[docs]]
        fresh = np.arange(width) < sizes[docs, None]
        np.copyto(rows, _PAD, where=~fresh)
        rows.sort(axis=1)
        fresh[:, 1:] &= rows[:, 1:] != rows[:, :-1]
        kept[docs] = fresh.sum(axis=1)
        found.append((docs, rows[fresh]))
    offsets = np.concatenate(([0], np.cumsum(kept)))
    values = np.empty(offsets[-1], np.uint32)
    for docs, distinct in found:
        values[_ranges(offsets[docs], kept[docs])] = distinct
    return Shingles(values=values, offsets=offsets)


def _row_blocks(sizes: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(width, indices) blocks of rows: sizes rounded up to within 1/8 of a power of two, about `_CELLS` cells a block."""
    step = np.left_shift(1, np.maximum(np.frexp(np.maximum(sizes, 1) - 1)[1] - 3, 0))
    widths = -(-sizes // step) * step
    order = np.argsort(widths, kind="stable")
    starts = np.flatnonzero(np.diff(widths[order], prepend=-1))
    for start, end in zip(starts.tolist(), [*starts[1:].tolist(), len(order)]):
        width = max(int(widths[order[start]]), 1)
        for block in np.array_split(order[start:end], -(-(end - start) * width // _CELLS)):
            yield width, block


def _sorted_rows(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    """Rows holding the values of two ranges (`starts`, `counts`: one column per range), each row sorted.

    Rows are padded with 2**32 - 1, which sorts last, so a row's own values come first.
    """
    rows = np.full((len(counts), width), _PAD)
    within = _ranges(np.arange(len(counts)) * width, counts.sum(axis=1))
    rows.ravel()[within] = np.take(values, _ranges(starts.ravel(), counts.ravel()))
    rows.sort(axis=1)
    return rows


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices starts[i], ..., starts[i] + counts[i] - 1 for every i, end to end (int32 where they fit: faster)."""
    first = np.cumsum(counts) - counts
    total = int(first[-1] + counts[-1]) if len(counts) else 0
    small = total < 2**31 and (total == 0 or int((starts + counts).max()) < 2**31)
    dtype = np.int32 if small else np.int64
    return np.arange(total, dtype=dtype) - np.repeat((first - starts).astype(dtype), counts)


# --- MinHash --------------------------------------------------------------------------------

def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the affine bijections `a * x + b mod 2**32` (a odd), from `rng(seed, "minhash")`."""
    gen = rng(seed, "minhash")
    a = gen.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = gen.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def minhash_signatures(shingles: Shingles, *, num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures of the documents' shingles."""
    return np.ascontiguousarray(_minhash_columns(shingles, *permutations(num_perm, seed)).T)


def _minhash_columns(shingles: Shingles, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(num_perm, n) signatures, computed over blocks of whole documents so values stay in cache."""
    out = np.empty((len(a), len(shingles)), dtype=np.uint32)
    offsets = shingles.offsets
    cuts = _sorted_unique(np.searchsorted(offsets, np.arange(0, offsets[-1], _BLOCK), side="right") - 1)
    cuts = np.append(cuts, len(shingles))
    width = int(np.diff(offsets[cuts]).max(initial=0))
    scratch = np.empty((len(a), width), dtype=np.uint32)  # reused: fresh buffers would page-fault
    for d0, d1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        x = shingles.values[offsets[d0]:offsets[d1]]
        v = np.multiply(a[:, None], x, out=scratch[:, :x.size])
        v += b[:, None]
        np.minimum.reduceat(v, offsets[d0:d1] - offsets[d0], axis=1, out=out[:, d0:d1])
    return out


def estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values for each (i, j) row of `pairs` ((n, num_perm) signatures)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return (signatures[pairs[:, 0]] == signatures[pairs[:, 1]]).mean(axis=1)


# --- LSH ------------------------------------------------------------------------------------

def optimal_bands(threshold: float, num_perm: int, *, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted FP and FN areas.

    The false positive area is the integral of the collision probability `1 - (1 - s**r)**b` over
    s in [0, threshold]; the false negative area that of its complement over [threshold, 1]. As
    datasketch's `_optimal_param` (same scan order and ties), with Gauss-Legendre quadrature.
    """
    bands, rows = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]).T
    fp = _integrate(lambda s: 1 - (1 - s ** rows[:, None]) ** bands[:, None], 0.0, threshold)
    fn = _integrate(lambda s: (1 - s ** rows[:, None]) ** bands[:, None], threshold, 1.0)
    best = int(np.argmin(fp * weights[0] + fn * weights[1]))
    return int(bands[best]), int(rows[best])


def _integrate(f: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, pieces: int = 32) -> np.ndarray:
    """Composite 16-point Gauss-Legendre integral of f over [lo, hi], vectorised over f's rows."""
    nodes, w = np.polynomial.legendre.leggauss(16)
    edges = np.linspace(lo, hi, pieces + 1)
    half = (edges[1:] - edges[:-1])[:, None] / 2
    s = ((edges[:-1] + edges[1:])[:, None] / 2 + half * nodes).ravel()
    return f(s) @ (half * w).ravel()


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(bands, n) uint64 hash of each band of each (n, num_perm) signature."""
    return _band_keys_columns(np.ascontiguousarray(signatures.T), bands, rows)


def _band_keys_columns(columns: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Per band, the sum of its rows times random odd 64-bit multipliers (mod 2**64)."""
    draws = rng(0, "minhash", "bands").integers(0, 2**63, size=bands * rows, dtype=np.uint64)
    mult = draws * np.uint64(2) + np.uint64(1)
    keys = np.zeros((bands, columns.shape[1]), dtype=np.uint64)
    for band in range(bands):
        for row in range(band * rows, (band + 1) * rows):
            keys[band] += columns[row].astype(np.uint64) * mult[row]
    return keys


def candidate_pairs(keys: np.ndarray, keep: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """(m, 2) sorted unique pairs (i < j) of documents sharing a key in any band of (bands, n) `keys`.

    Each band is sorted once with the document index packed into the key's low bits, which
    drops that many key bits: the few spurious candidates this adds are removed by verification.
    A bucket of m documents gives m * (m - 1) / 2 pairs, as in any LSH index. `keep(left, right)`,
    when given, screens each band's pairs (a boolean mask) before they are collected.
    """
    n = keys.shape[1]
    if n < 2:
        return np.empty((0, 2), np.int64)
    found = []
    bits = np.uint64(int(n - 1).bit_length())
    index = np.arange(n, dtype=np.uint64)
    for band in keys:
        codes = _bucket_pairs(np.sort(((band >> bits) << bits) | index), bits, n)
        if keep is not None and codes.size:
            codes = codes[keep(codes // n, codes % n)]
        found.append(codes)
    codes = _sorted_unique(np.concatenate(found))
    return np.column_stack((codes // n, codes % n))


def _bucket_pairs(packed: np.ndarray, bits: np.uint64, n: int) -> np.ndarray:
    """Codes i * n + j (i < j) of all pairs within each bucket of one sorted, packed band."""
    order = (packed & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
    top = packed >> bits
    starts = np.flatnonzero(np.concatenate(([True], top[1:] != top[:-1])))
    sizes = np.diff(np.append(starts, n))
    partners = np.repeat(starts + sizes, sizes) - np.arange(n) - 1  # later members of the bucket
    total = int(partners.sum())
    if total == 0:
        return np.empty(0, np.int64)
    left = np.repeat(np.arange(n), partners)
    right = np.arange(total) - np.repeat(np.cumsum(partners) - partners, partners) + left + 1
    return order[left] * n + order[right]


# --- verification and clusters --------------------------------------------------------------

def exact_jaccard(sets: Shingles, pairs: np.ndarray) -> np.ndarray:
    """Jaccard of the sorted unique shingle sets (from `shingle_sets`) for each (i, j) row of `pairs`."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.empty(0, np.float64)
    sizes = sets.sizes()
    inter = _intersections(sets, pairs)
    union = sizes[pairs[:, 0]] + sizes[pairs[:, 1]] - inter
    return inter / union


def _intersections(sets: Shingles, pairs: np.ndarray) -> np.ndarray:
    """|set(i) & set(j)| per pair: both sets in one row, rows sorted, equal neighbours counted.

    A set holds each value once, so a value appears twice in a row exactly when both sets hold it.
    """
    counts = sets.sizes()[pairs]
    total = counts.sum(axis=1)
    inter = np.empty(len(pairs), np.int64)
    for width, block in _row_blocks(total):
        rows = _sorted_rows(sets.values, sets.offsets[pairs[block]], counts[block], width)
        equal = rows[:, 1:] == rows[:, :-1]
        equal &= np.arange(width - 1) < total[block, None] - 1
        inter[block] = equal.sum(axis=1)
    return inter


def cluster_labels(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over (i, j) pairs: per document the smallest index of its connected component."""
    parent = np.arange(n, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    left, right = pairs[:, 0], pairs[:, 1]
    while True:
        root_l, root_r = parent[left], parent[right]
        split = root_l != root_r
        if not split.any():
            return parent
        lo, hi = np.minimum(root_l, root_r)[split], np.maximum(root_l, root_r)[split]
        np.minimum.at(parent, hi, lo)  # hook the larger root under the smaller
        while True:  # pointer jumping until every node points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def clusters_from_labels(labels: np.ndarray) -> list[list[int]]:
    """Member indices of each label shared by two or more documents, ordered by smallest member."""
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.diff(labels[order], prepend=-1))
    sizes = np.diff(starts, append=len(order))
    shared = sizes > 1
    return [order[s:s + m].tolist() for s, m in zip(starts[shared].tolist(), sizes[shared].tolist())]


# --- the step -------------------------------------------------------------------------------

def near_duplicates(texts: Sequence[str], settings: NearDupSettings | None = None) -> NearDupResult:
    """Find near-duplicate texts: MinHash + LSH candidates, verified, chained into clusters.

    Each text is shingled once: its sorted unique shingle set gives its MinHash signature (the
    minimum over a set is the minimum over its multiset) and is kept for verification, about
    4 bytes per distinct shingle plus 8 per text, besides the band keys (8 bytes per band and
    text) and the sketch (one byte per signature value in use).

    Args:
        texts: the (already normalised) texts; indices in the result refer to this order.
        settings: how to shingle, hash, band and verify; defaults to `NearDupSettings()`.

    Returns:
        Cluster labels per text, the verified pairs with their Jaccard, and the banding used.
    """
    settings = settings or NearDupSettings.from_params(TextNearParams())
    texts = list(texts)
    bands, rows = settings.bands, settings.rows
    keys, sketch, sets = _all_band_keys(texts, settings, bands, rows)
    keep = None if settings.screen is None else _screen(sketch, bands * rows, settings.threshold, settings.screen)
    candidates = candidate_pairs(keys, keep)
    del keys, sketch
    similarity = _verify(sets, candidates, settings)
    keep = similarity >= settings.threshold
    pairs = candidates[keep]
    log.debug("near duplicates: %d candidates, %d verified pairs", len(candidates), len(pairs))
    return NearDupResult(labels=cluster_labels(len(texts), pairs), pairs=pairs, jaccard=similarity[keep],
                         candidates=len(candidates), bands=bands, rows=rows)


def _chunks(n: int, size: int) -> Iterator[slice]:
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def _all_band_keys(texts: Sequence[str], settings: NearDupSettings, bands: int,
                   rows: int) -> tuple[np.ndarray, np.ndarray, Shingles]:
    """(bands, n) band keys, a sketch (per text, the low byte of each MinHash value in use) and the shingle sets.

    Texts are shingled and hashed `chunk_size` at a time. The sketch's rows are zero-padded to
    whole words, so it is (n, ceil(bands * rows / 8)) uint64.
    """
    a, b = permutations(settings.num_perm, settings.seed)
    width = bands * rows
    keys = np.empty((bands, len(texts)), dtype=np.uint64)
    sketch = np.zeros((len(texts), -(-width // 8) * 8), dtype=np.uint8)
    sets = []
    for part in _chunks(len(texts), settings.chunk_size):
        sets.append(shingle_sets(texts[part], shingle=settings.shingle, size=settings.k))
        columns = _minhash_columns(sets[-1], a[:width], b[:width])
        keys[:, part] = _band_keys_columns(columns, bands, rows)
        sketch[part, :width] = columns.T.astype(np.uint8)
    return keys, sketch.view(np.uint64), _concatenated(sets)


def _concatenated(parts: list[Shingles]) -> Shingles:
    """The documents of `parts`, one after another."""
    if not parts:
        return Shingles(values=np.empty(0, np.uint32), offsets=np.zeros(1, np.int64))
    sizes = np.concatenate([part.sizes() for part in parts])
    return Shingles(values=np.concatenate([part.values for part in parts]), offsets=np.concatenate(([0], np.cumsum(sizes))))


def _subset(shingles: Shingles, docs: np.ndarray) -> Shingles:
    """The documents `docs` of `shingles`, in that order."""
    sizes = shingles.sizes()[docs]
    values = np.take(shingles.values, _ranges(shingles.offsets[docs], sizes))
    return Shingles(values=values, offsets=np.concatenate(([0], np.cumsum(sizes))))


def _screen(sketch: np.ndarray, width: int, threshold: float, sigmas: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A mask of the pairs whose sketch estimate reaches `sigmas` standard deviations below the threshold.

    Two one-byte values agree with probability J + (1 - J) / 256 for Jaccard J, so the agreement
    fraction over the `width` values is corrected for chance before it is compared. Bytes are
    compared eight at a time: a byte of `x ^ y` is zero exactly where the two sketches agree.
    """
    cutoff = threshold - sigmas * np.sqrt(threshold * (1 - threshold) / width)
    needed = int(np.ceil(width * (cutoff + (1 - cutoff) / 256) - 1e-9)) if cutoff > 0 else 0
    most_differing = width - needed  # the zero padding never differs

    def keep(left: np.ndarray, right: np.ndarray) -> np.ndarray:
        mask = np.empty(left.size, dtype=bool)
        x, y = np.empty((2, min(left.size, _PAIRS), sketch.shape[1]), np.uint64)  # reused, cache-sized
        for part in _chunks(left.size, _PAIRS):
            mask[part] = _differing_bytes(sketch, left[part], right[part], x, y) <= most_differing
        return mask

    return keep


def _differing_bytes(sketch: np.ndarray, left: np.ndarray, right: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per pair, how many bytes of the two sketch rows differ; x and y are scratch rows."""
    low7, high = np.uint64(0x7F7F7F7F7F7F7F7F), np.uint64(0x8080808080808080)
    x, y = x[:left.size], y[:left.size]
    np.take(sketch, left, axis=0, out=x)
    np.take(sketch, right, axis=0, out=y)
    x ^= y
    np.bitwise_and(x, low7, out=y)
    y += low7
    y |= x
    y &= high  # the top bit of each byte is set where the byte is not zero
    return np.bitwise_count(y).sum(axis=1, dtype=np.int64)


def _verify(sets: Shingles, pairs: np.ndarray, settings: NearDupSettings) -> np.ndarray:
    """Similarity of each candidate pair from the kept shingle sets, a chunk of pairs at a time."""
    similarity = np.empty(len(pairs), dtype=np.float64)
    for part in _chunks(len(pairs), max(settings.chunk_size // 2, 1)):
        similarity[part] = _similarity(sets, pairs[part], settings)
    return similarity


def _similarity(sets: Shingles, pairs: np.ndarray, settings: NearDupSettings) -> np.ndarray:
    """Exact Jaccard of the pairs' shingle sets, or the estimate from their full signatures."""
    if settings.verify == "exact":
        return exact_jaccard(sets, pairs)
    docs = _sorted_unique(pairs.ravel())
    signatures = minhash_signatures(_subset(sets, docs), num_perm=settings.num_perm, seed=settings.seed)
    return estimated_jaccard(signatures, np.searchsorted(docs, pairs))


# --- calibration ----------------------------------------------------------------------------

def calibrate(labelled: Iterable[tuple[str, str, bool]], settings: NearDupSettings | None = None, *,
              target_precision: float = 0.98) -> dict[str, Any]:
    """Precision and recall of MinHash + LSH + verification on labelled pairs, and a better banding.

    A pair is predicted a duplicate when its two signatures agree on all rows of at least one band
    and it passes verification at the threshold. Every (bands, rows) with bands * rows <= num_perm
    is scored; the suggestion is the one with the highest recall whose precision reaches
    `target_precision` (ties: fewer candidates, then more rows), or None when none does.

    Returns:
        A JSON-serialisable dict: the settings, pair counts, the configured banding's scores
        and the suggested banding's.
    """
    settings = settings or NearDupSettings.from_params(TextNearParams())
    items = list(labelled)
    if not items:
        raise ValueError("calibrate needs at least one labelled pair (text_a, text_b, is_duplicate).")
    truth = np.array([bool(r[2]) for r in items])
    texts = [r[0] for r in items] + [r[1] for r in items]
    pairs = np.column_stack((np.arange(len(items)), np.arange(len(items)) + len(items)))
    sets = shingle_sets(texts, shingle=settings.shingle, size=settings.k)
    signatures = minhash_signatures(sets, num_perm=settings.num_perm, seed=settings.seed)
    equal = signatures[pairs[:, 0]] == signatures[pairs[:, 1]]
    verified = _similarity(sets, pairs, settings) >= settings.threshold
    scores = _banding_scores(equal, verified, truth)
    bands, rows = settings.bands, settings.rows
    return {
        "threshold": settings.threshold, "num_perm": settings.num_perm, "shingle": settings.shingle,
        "size": settings.k, "verify": settings.verify, "target_precision": target_precision,
        "pairs": len(items), "duplicates": int(truth.sum()),
        "configured": scores[(bands, rows)],
        "suggested": _suggest(scores, target_precision),
    }


def _banding_scores(equal: np.ndarray, verified: np.ndarray, truth: np.ndarray) -> dict[tuple[int, int], dict]:
    """Scores of every banding, keyed by (bands, rows); `equal` is (pairs, num_perm) agreement."""
    num_perm = equal.shape[1]
    scores = {}
    for rows in range(1, num_perm + 1):
        most = num_perm // rows
        agree = equal[:, :most * rows].reshape(len(equal), most, rows).all(axis=2)
        collide = np.logical_or.accumulate(agree, axis=1)  # column b-1: some band among the first b
        for bands in range(1, most + 1):
            scores[(bands, rows)] = _score(bands, rows, collide[:, bands - 1], verified, truth)
    return scores


def _score(bands: int, rows: int, collide: np.ndarray, verified: np.ndarray, truth: np.ndarray) -> dict:
    """Precision and recall of collide-and-verified; None where undefined (no predictions, no duplicates)."""
    predicted = collide & verified
    tp, positives, duplicates = int((predicted & truth).sum()), int(predicted.sum()), int(truth.sum())
    return {
        "bands": bands, "rows": rows, "candidates": int(collide.sum()),
        "precision": tp / positives if positives else None,
        "recall": tp / duplicates if duplicates else None,
        "candidate_recall": int((collide & truth).sum()) / duplicates if duplicates else None,
    }


def _suggest(scores: dict[tuple[int, int], dict], target: float) -> dict | None:
    good = [s for s in scores.values() if s["precision"] is not None and s["precision"] >= target]
    if not good:
        return None
    return max(good, key=lambda s: (s["recall"] or 0.0, -s["candidates"], s["rows"], -s["bands"]))
