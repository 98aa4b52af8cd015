"""Benchmark the semantic-neighbour search against scikit-learn and a numpy matrix; prints one table.

    .venv/bin/python benchmarks/bench_semantic_search.py [--sizes 5000,20000] [--threshold 0.9]
        [--seed 0] [--repeats 3] [--numpy-max-mib 2500]

Corpus, generated per size from `rng(seed, "bench_semantic_search", size, ...)` (no downloads):
float32 vectors of 384 dimensions (MiniLM's width). n // 20 sources get 1 to 3 planted copies
each, `c * source + sqrt(1 - c^2) * noise` with the noise orthogonal to the source and c drawn
from U(0.92, 0.99), so each (source, copy) pair has cosine c; every other record is a random
direction (Gaussian), so random pairs stay far below any threshold near 0.9 (their cosines have
a standard deviation of 1 / sqrt(384)). Two copies of one source have a cosine near c1 * c2, so
their pairs land on both sides of 0.9 and some very close to it. Rows are shuffled and the ids
(`r0000000`, ...) follow row order.

Three searches for every pair of records whose cosine reaches the threshold, on the same vectors:

* ours: `pipeline.steps.semantic.neighbour_pairs` (float32 blocks, candidates rechecked in
  float64 and rounded to 4 places);
* sklearn: `NearestNeighbors(metric="cosine", algorithm="brute").fit(v).radius_neighbors(v,
  radius=1 - threshold)`, each (row, neighbour) turned into an a < b pair (the union of both
  directions, self pairs dropped);
* numpy: `unit @ unit.T >= threshold` in float32 on the whole matrix, upper triangle; only where
  the matrix and its mask fit in `--numpy-max-mib`.

Per size and search: wall seconds (best of `--repeats` calls, measure.py's `timed`, after one
small warm-up of each search), that time over ours, the peak memory one more, untimed call
allocated (tracemalloc: Python objects and numpy buffers, not BLAS's work space; RSS is not used,
as the allocator keeps freed pages between calls), pairs found, planted pairs found (of those
whose exact cosine reaches the threshold by more than 5e-5: all of them at 0.9), and the
pairs found by only one of this search and ours, split by their exact float64 cosine: `boundary`
within 5e-5 of the threshold (4-place rounding, and float32 against float64, may legitimately put
them on either side), `other` beyond it (a real disagreement). Below the table, per size: the
pairs ours found inside and outside the planted families (outside: random pairs, 0 expected), and
up to 5 pairs not found by every search, with their exact cosines and which searches found them.
Deterministic for a seed, timings aside. Exits 0; 1 where ours misses such a planted pair or a
search disagrees with ours beyond the boundary. The default sizes take about a minute on 2 busy
cores; `--sizes 50000 --repeats 1` about two (numpy skipped: its matrix would take 12 GiB).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import numpy as np
from sklearn.neighbors import NearestNeighbors

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import timed, traced  # noqa: E402
from pipeline.seeding import rng  # noqa: E402
from pipeline.steps.semantic import neighbour_pairs  # noqa: E402

DIMENSIONS = 384
PLANTED_COSINE = (0.92, 0.99)
BOUNDARY = 5e-5
SHOWN_DIFFERENCES = 5


@dataclass(slots=True)
class Corpus:
    """Vectors (float32), their ids in row order, planted (source, copy) pairs and every record's family."""

    vectors: np.ndarray
    ids: np.ndarray
    planted: np.ndarray  # pair codes i * n + j, i < j
    family: np.ndarray  # the row of its source for a source or copy, -1 for the other records


@dataclass(slots=True)
class Search:
    """One search's result and cost at one size, and how it differs from ours."""

    method: str
    codes: np.ndarray
    seconds: float
    peak_mib: float
    planted_found: int = 0
    only_here: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    only_ours: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


# --- corpus ---------------------------------------------------------------------------------

def unit_gaussian(gen: np.random.Generator, rows: int) -> np.ndarray:
    vectors = gen.standard_normal((rows, DIMENSIONS))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def planted_copies(sources: np.ndarray, cosines: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Per row of unit `sources`, a unit vector at exactly `cosines` from it (orthogonal noise mixed in)."""
    noise = gen.standard_normal(sources.shape)
    noise -= np.einsum("ij,ij->i", noise, sources)[:, None] * sources
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return cosines[:, None] * sources + np.sqrt(1 - cosines**2)[:, None] * noise


def make_corpus(n: int, seed: int) -> Corpus:
    """n records: n // 20 sources with 1-3 planted copies each, the rest random directions; rows shuffled."""
    copies_per = rng(seed, "bench_semantic_search", n, "copies").integers(1, 4, size=n // 20)
    originals = n - int(copies_per.sum())
    base = unit_gaussian(rng(seed, "bench_semantic_search", n, "directions"), originals)
    source_rows = rng(seed, "bench_semantic_search", n, "sources").choice(originals, size=n // 20, replace=False)
    of = np.repeat(source_rows, copies_per)
    cosines = rng(seed, "bench_semantic_search", n, "cosines").uniform(*PLANTED_COSINE, size=len(of))
    copies = planted_copies(base[of], cosines, rng(seed, "bench_semantic_search", n, "noise"))
    place = rng(seed, "bench_semantic_search", n, "order").permutation(n)  # old row -> new row
    vectors = np.empty((n, DIMENSIONS), np.float32)
    vectors[place] = np.concatenate([base, copies])
    family = np.full(n, -1, np.int64)
    family[place[source_rows]] = place[source_rows]
    family[place[originals:]] = place[of]
    ends = np.sort(np.stack([place[of], place[originals:]], axis=1), axis=1)
    ids = np.array([f"r{i:07d}" for i in range(n)], dtype=object)
    return Corpus(vectors, ids, codes_of(ends[:, 0], ends[:, 1], n), family)


def codes_of(first: np.ndarray, second: np.ndarray, n: int) -> np.ndarray:
    """Sorted distinct pair codes i * n + j of row pairs, i < j."""
    return np.unique(first.astype(np.int64) * n + second.astype(np.int64))


# --- the three searches ---------------------------------------------------------------------

def ours(corpus: Corpus, threshold: float) -> np.ndarray:
    pairs = neighbour_pairs(corpus.ids, corpus.vectors, threshold)
    rows = {name: k for k, name in enumerate(corpus.ids)}
    return codes_of(pairs["a"].map(rows).to_numpy(), pairs["b"].map(rows).to_numpy(), len(corpus.ids))


def sklearn_radius(corpus: Corpus, threshold: float) -> np.ndarray:
    index = NearestNeighbors(metric="cosine", algorithm="brute").fit(corpus.vectors)
    _, neighbours = index.radius_neighbors(corpus.vectors, radius=1 - threshold)
    counts = np.fromiter((len(row) for row in neighbours), np.int64, count=len(neighbours))
    i, j = np.repeat(np.arange(len(neighbours)), counts), np.concatenate(neighbours)
    keep = i != j
    return codes_of(np.minimum(i, j)[keep], np.maximum(i, j)[keep], len(neighbours))


def numpy_matrix(corpus: Corpus, threshold: float) -> np.ndarray:
    unit = corpus.vectors / np.linalg.norm(corpus.vectors, axis=1, keepdims=True)
    i, j = np.nonzero(unit @ unit.T >= threshold)
    return codes_of(i[j > i], j[j > i], len(unit))


SEARCHES = {"ours": ours, "sklearn": sklearn_radius, "numpy": numpy_matrix}


def numpy_mib(n: int) -> float:
    """The full float32 matrix and its boolean mask."""
    return n * n * 5 / 2**20


def run_search(method: str, corpus: Corpus, threshold: float, repeats: int) -> Search:
    """Best wall seconds of `repeats` timed calls, and the peak of one untimed call's allocations."""
    codes, peak = traced(lambda: SEARCHES[method](corpus, threshold))
    seconds = min(timed(lambda: SEARCHES[method](corpus, threshold))[1] for _ in range(repeats))
    return Search(method, codes, seconds, peak)


def warm_up(threshold: float, seed: int) -> None:
    """One small call of each search, so library loading and first-call costs are not timed."""
    corpus = make_corpus(512, seed)
    for search in SEARCHES.values():
        search(corpus, threshold)


# --- comparison -----------------------------------------------------------------------------

def exact_cosines(corpus: Corpus, codes: np.ndarray) -> np.ndarray:
    """Float64 cosine of each pair code's rows."""
    n = len(corpus.vectors)
    unit = corpus.vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    return np.einsum("ij,ij->i", unit[codes // n], unit[codes % n])


def planted_reaching(corpus: Corpus, threshold: float) -> np.ndarray:
    """The planted pairs every search must find: exact cosine at least `BOUNDARY` above the threshold."""
    return corpus.planted[exact_cosines(corpus, corpus.planted) >= threshold + BOUNDARY]


def compare(search: Search, reference: Search, must_find: np.ndarray) -> None:
    """Fill in the planted pairs `search` found and the pairs only it or only `reference` (ours) found."""
    search.planted_found = int(np.isin(must_find, search.codes).sum())
    search.only_here = np.setdiff1d(search.codes, reference.codes)
    search.only_ours = np.setdiff1d(reference.codes, search.codes)


def split_boundary(corpus: Corpus, codes: np.ndarray, threshold: float) -> tuple[int, int]:
    """(pairs within `BOUNDARY` of the threshold, the others) among `codes`."""
    near = np.abs(exact_cosines(corpus, codes) - threshold) <= BOUNDARY
    return int(near.sum()), int((~near).sum())


def outside_families(corpus: Corpus, codes: np.ndarray) -> int:
    """Pairs whose two rows are not a source and its copy or two copies of one source."""
    n = len(corpus.vectors)
    first, second = corpus.family[codes // n], corpus.family[codes % n]
    return int(np.sum((first < 0) | (first != second)))


# --- report ---------------------------------------------------------------------------------

HEAD = (f"{'size':>7} {'method':<8} {'seconds':>8} {'x ours':>7} {'peak MiB':>9} {'pairs':>7} {'planted':>13} "
        f"{'same as ours':>12} {'boundary':>9} {'other':>6}")


def rows(n: int, searches: list[Search], corpus: Corpus, threshold: float, must_find: int) -> list[str]:
    base = searches[0]
    lines = []
    for s in searches:
        planted = f"{s.planted_found:,}/{must_find:,}"
        if s is base:
            same, boundary, other = "-", "-", "-"
        else:
            differing = np.concatenate([s.only_here, s.only_ours])
            same = "yes" if not len(differing) else "no"
            boundary, other = split_boundary(corpus, differing, threshold)
        lines.append(f"{n:>7,} {s.method:<8} {s.seconds:>8.2f} {s.seconds / base.seconds:>7.2f} {s.peak_mib:>9.1f} "
                     f"{len(s.codes):>7,} {planted:>13} {same:>12} {boundary:>9} {other:>6}")
    return lines


def notes(n: int, searches: list[Search], corpus: Corpus) -> list[str]:
    """Pairs inside and outside the planted families, and the pairs not every search found."""
    base, outside = searches[0], outside_families(corpus, searches[0].codes)
    planted = int(np.isin(base.codes, corpus.planted).sum())
    lines = [(f"{n:,}: ours found {len(base.codes) - outside:,} pairs inside planted families ({planted:,} of the "
              f"{len(corpus.planted):,} planted, the rest two copies of one source) and {outside:,} outside them")]
    found_by = {s.method: s.codes for s in searches}
    differing = np.setdiff1d(reduce(np.union1d, found_by.values()), reduce(np.intersect1d, found_by.values()))
    shown = differing[:SHOWN_DIFFERENCES]
    for code, cosine in zip(shown, exact_cosines(corpus, shown), strict=True):
        by = ", ".join(m for m, codes in found_by.items() if code in codes)
        pair = f"{corpus.ids[code // n]}-{corpus.ids[code % n]}"
        lines.append(f"{n:,}: {pair} exact cosine {cosine:.7f}, found by {by} only")
    if len(differing) > len(shown):
        lines.append(f"{n:,}: {len(differing) - len(shown)} more pairs not found by every search")
    return lines


def failed(searches: list[Search], corpus: Corpus, threshold: float, must_find: int) -> bool:
    """Ours misses a planted pair it must find, or another search differs from ours beyond the boundary."""
    differing = [np.concatenate([s.only_here, s.only_ours]) for s in searches[1:]]
    return (searches[0].planted_found < must_find
            or any(split_boundary(corpus, codes, threshold)[1] for codes in differing))


def one_size(n: int, args: argparse.Namespace) -> tuple[list[str], list[str], bool]:
    """Every search on the corpus of `n` records: (table rows, notes, whether a check failed)."""
    corpus = make_corpus(n, args.seed)
    methods = [m for m in SEARCHES if m != "numpy" or numpy_mib(n) <= args.numpy_max_mib]
    searches = [run_search(m, corpus, args.threshold, args.repeats) for m in methods]
    must_find = planted_reaching(corpus, args.threshold)
    for search in searches:
        compare(search, searches[0], must_find)
    size_notes = notes(n, searches, corpus)
    if len(methods) < len(SEARCHES):
        size_notes.append(f"{n:,}: numpy skipped (its matrix and mask take {numpy_mib(n):,.0f} MiB, "
                          "over --numpy-max-mib)")
    return (rows(n, searches, corpus, args.threshold, len(must_find)), size_notes,
            failed(searches, corpus, args.threshold, len(must_find)))


# --- command line ---------------------------------------------------------------------------

def sizes(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {value!r}") from None
    if any(v < 100 for v in numbers):
        raise argparse.ArgumentTypeError(f"every size must be at least 100, got {value}")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=[5_000, 20_000], help="records per corpus, comma-separated")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per search and size (the best is shown)")
    parser.add_argument("--numpy-max-mib", type=float, default=2_500,
                        help="the numpy search runs where its matrix and mask take at most this")
    args = parser.parse_args(argv)
    if not 0 < args.threshold < 1:
        parser.error(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"cosine >= {args.threshold} on {DIMENSIONS}-dim float32 vectors, seed {args.seed}, best of {args.repeats}; "
          f"{os.cpu_count()} cores, load average {load} at start", flush=True)
    warm_up(args.threshold, args.seed)
    table, footnotes, bad = [HEAD, "-" * len(HEAD)], [], False
    for n in args.sizes:
        size_rows, size_notes, size_bad = one_size(n, args)
        table, footnotes, bad = table + size_rows, footnotes + size_notes, bad or size_bad
    print("\n".join([*table, "", *footnotes]))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
