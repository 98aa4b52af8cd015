"""Benchmark near-duplicate search on perceptual hashes; prints one JSON object.

(a) 100,000 random 64-bit hashes with near-duplicate pairs planted at known distances, searched
by `near_pairs` (multi-index hashing, default plan and the classic threshold + 1 exact chunks)
and by brute force (vectorised XOR + popcount over row blocks); the pair sets must be equal.
(b) The hymenoptera photos, where present: closest pair and pairs within the threshold.

Run: .venv/bin/python benchmarks/bench_image_hash.py [--n 100000] [--thresholds 6 8 10]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from pipeline.steps.imagehash import brute_force_pairs, hash_images, near_pairs, plan_chunks

ROOT = Path(__file__).resolve().parents[1]
HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"


def planted_hashes(n: int, *, max_distance: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random hashes where n // 20 disjoint (source, copy) pairs differ by 0..max_distance bits.

    Returns the hashes and the planted pairs as rows (i, j, distance) with i < j.
    """
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    ends = rng.permutation(n)[: 2 * (n // 20)].reshape(-1, 2)
    distances = np.arange(len(ends)) % (max_distance + 1)
    for (source, copy), d in zip(ends.tolist(), distances.tolist()):
        flips = rng.choice(64, size=d, replace=False)
        hashes[copy] = hashes[source] ^ np.uint64(sum(1 << int(b) for b in flips))
    planted = np.column_stack([ends.min(axis=1), ends.max(axis=1), distances])
    return hashes, planted


def timed(fn, *args, **kwargs) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, round(time.perf_counter() - start, 3)


def as_set(pairs: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(row) for row in pairs.tolist()}


def search_benchmark(n: int, thresholds: list[int], *, seed: int, classic: bool) -> dict:
    """Time every search method at each threshold and check that they agree with brute force."""
    hashes, planted = planted_hashes(n, max_distance=max(thresholds) + 2, seed=seed)
    brute, brute_s = timed(brute_force_pairs, hashes, max(thresholds))
    out = {"n": n, "planted_pairs": len(planted), "brute_force_s": brute_s, "brute_force_threshold": max(thresholds),
           "thresholds": {}}
    for t in thresholds:
        expected = as_set(brute[brute[:, 2] <= t])
        found, seconds = timed(near_pairs, hashes, t)
        assert as_set(found) == expected, f"multi-index search differs from brute force at threshold {t}"
        assert as_set(planted[planted[:, 2] <= t]) <= expected, f"a planted pair is missing at threshold {t}"
        plan = plan_chunks(n, t)
        row = {"pairs": len(found), "planted_within": int((planted[:, 2] <= t).sum()), "multi_index_s": seconds,
               "plan_width_radius": " ".join(f"{c.width}/{c.radius}" for c in plan)}
        if classic:
            exact, row["exact_chunks_s"] = timed(near_pairs, hashes, t, chunks=t + 1)
            assert as_set(exact) == expected, f"exact-chunk search differs from brute force at threshold {t}"
        out["thresholds"][str(t)] = row
    return out


def photo_benchmark(folder: Path, threshold: int) -> dict:
    """Closest pair and pairs within `threshold` among real photos, for each hash method."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    blobs = [f.read_bytes() for f in files]
    out: dict = {"files": len(files), "threshold": threshold}
    for method in ("phash", "dhash"):
        hashes, seconds = timed(hash_images, blobs, method=method)
        distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :]).astype(int)
        i, j = np.triu_indices(len(files), 1)
        k = int(np.argmin(distances[i, j]))
        out[method] = {
            "hash_s": seconds,
            "closest_distance": int(distances[i[k], j[k]]),
            "closest_pair": [str(files[i[k]].relative_to(folder)), str(files[j[k]].relative_to(folder))],
            "pairs_within_threshold": len(near_pairs(hashes, threshold)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--thresholds", type=int, nargs="+", default=[6, 8, 10])
    parser.add_argument("--photo-threshold", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-classic", action="store_true", help="skip the threshold + 1 exact-chunk timings")
    args = parser.parse_args(argv)
    result = {"cpus": os.cpu_count(), "search": search_benchmark(args.n, sorted(args.thresholds), seed=args.seed,
                                                                   classic=not args.no_classic)}
    if HYMENOPTERA.is_dir():
        result["hymenoptera"] = photo_benchmark(HYMENOPTERA, args.photo_threshold)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
