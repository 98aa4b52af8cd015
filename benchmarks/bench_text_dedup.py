"""Benchmark: the project's near-duplicate step against datasketch 2.x MinHash + LSH.

    .venv/bin/python benchmarks/bench_text_dedup.py --docs 200000 [--corpus fragments] [--shingle word|char|both]

Two seeded corpora of short ASCII texts (about 100 characters of words from a Zipf vocabulary), in
each of which a fifth are edited copies (0 to 5 word edits) of earlier texts, so copies of copies
make chains and their Jaccard spreads around the threshold:

* edits (default): the other texts are independent draws of words;
* fragments: the other texts are assembled from a small pool of shared phrases of Zipf
  popularity, so unrelated texts share many n-grams and LSH proposes many candidates.

For word 3-grams and for character 5-grams (`--shingle both`, the default) it then times, in
one run,

* project: `near_duplicates` from the raw texts (case folding and shingling included) to the
  verified pairs, and
* datasketch: `MinHash.bulk` + `MinHashLSH` insert all + query all, with the same num_perm,
  threshold and shingles (built beforehand with plain Python and timed apart, so the ratio is
  conservative),

and scores both against every pair whose exact Jaccard reaches the threshold. Prints one JSON line.

Ground truth is exact and independent of both methods. The texts are ASCII, so each character
k-gram (k <= 9) packs losslessly into a 35-bit key; each word k-gram gets an exact integer id
(words mapped to integers, tuples of them re-ranked to dense ids). Nothing is hashed. An
AllPairs-style prefix filter (rarest-first global order, see `true_pairs`) plus the size filter
yields every pair that can reach the threshold, and each survivor's Jaccard is computed exactly
from those keys.

Memory is the resident set size (RSS) per phase: the kernel's peak (VmHWM) is reset through
/proc/self/clear_refs before each timed phase and read after it; where that is not allowed it
falls back to getrusage's ru_maxrss (the peak of the whole process so far).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from measure import measured, timed  # noqa: E402
from pipeline.params import TextNearParams  # noqa: E402
from pipeline.seeding import rng  # noqa: E402
from pipeline.steps.neardup import NearDupSettings, near_duplicates  # noqa: E402

LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype="S1")


# --- corpus ---------------------------------------------------------------------------------

def make_corpus(docs: int, seed: int, *, dup_fraction: float = 0.2) -> list[str]:
    """Short texts, a `dup_fraction` of them edited copies of earlier texts, in shuffled order."""
    gen = rng(seed, "bench", "corpus")
    vocab = [w.decode() for w in _vocabulary(gen, 20_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    copies = int(docs * dup_fraction)
    draws = gen.choice(len(vocab), size=(docs - copies, 40), p=weights / weights.sum())
    texts = [_sentence(vocab, row, int(gen.integers(80, 121))) for row in draws]
    for _ in range(copies):
        source = texts[int(gen.integers(len(texts)))]
        texts.append(_edit(source.split(" "), vocab, gen, int(gen.integers(0, 6))))
    return [texts[i] for i in gen.permutation(len(texts))]


def make_fragment_corpus(docs: int, seed: int, *, dup_fraction: float = 0.2, phrases: int = 1_000,
                         fillers: int = 2) -> list[str]:
    """Short texts assembled from a pool of shared phrases, a `dup_fraction` of them edited copies.

    Each text alternates phrases from the pool (12 to 35 characters) with `fillers` words drawn
    on their own. Phrase popularity is Zipf-like, so the common phrases recur in thousands of
    texts: their word and character n-grams are shared across unrelated texts, and LSH proposes
    many candidates whose Jaccard lies below the threshold.
    """
    gen = rng(seed, "bench", "fragments")
    vocab = [w.decode() for w in _vocabulary(gen, 20_000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 0.9
    rows = gen.choice(len(vocab), size=(phrases, 8), p=weights / weights.sum())
    pool = [_sentence(vocab, row, int(gen.integers(12, 36))) for row in rows]
    popularity = 1.0 / np.arange(1, phrases + 1)
    copies = int(docs * dup_fraction)
    picks = gen.choice(phrases, size=(docs - copies, 8), p=popularity / popularity.sum())
    words = gen.integers(len(vocab), size=(docs - copies, 8, fillers))  # uniform: rarer than the phrases
    texts = [_assembled(pool, vocab, pick, filler, int(gen.integers(80, 121))) for pick, filler in zip(picks, words)]
    for _ in range(copies):
        source = texts[int(gen.integers(len(texts)))]
        texts.append(_edit(source.split(" "), vocab, gen, int(gen.integers(0, 6))))
    return [texts[i] for i in gen.permutation(len(texts))]


def _assembled(pool: list[str], vocab: list[str], picks: np.ndarray, fillers: np.ndarray, target: int) -> str:
    """Phrases from the pool, each followed by its filler words, until the text reaches `target` characters."""
    parts, length = [], -1
    for phrase, words in zip(picks, fillers):
        parts += [pool[phrase], *(vocab[w] for w in words)]
        length += len(pool[phrase]) + sum(len(vocab[w]) + 1 for w in words) + 1
        if length >= target:
            break
    return " ".join(parts)


def _vocabulary(gen: np.random.Generator, size: int) -> list[bytes]:
    lengths = gen.integers(2, 10, size=size)
    letters = gen.choice(LETTERS, size=int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    return [b"".join(part) for part in np.split(letters, cuts)]


def _sentence(vocab: list[str], row: np.ndarray, target: int) -> str:
    words, length = [], -1
    for index in row:
        words.append(vocab[index])
        length += len(vocab[index]) + 1
        if length >= target:
            break
    return " ".join(words)


def _edit(words: list[str], vocab: list[str], gen: np.random.Generator, edits: int) -> str:
    """`edits` random word substitutions, deletions, insertions or swaps; none: a case change."""
    words = list(words)
    for _ in range(edits):
        at = int(gen.integers(len(words)))
        kind = int(gen.integers(4))
        if kind == 0:
            words[at] = vocab[int(gen.integers(len(vocab)))]
        elif kind == 1 and len(words) > 2:
            del words[at]
        elif kind == 2:
            words.insert(at, vocab[int(gen.integers(len(vocab)))])
        elif at + 1 < len(words):
            words[at], words[at + 1] = words[at + 1], words[at]
    text = " ".join(words)
    return text.capitalize() if edits == 0 else text


# --- exact ground truth ---------------------------------------------------------------------

def packed_shingles(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique lossless k-gram keys per text (7 bits per ASCII character), and offsets."""
    folded = [t.casefold() for t in texts]
    codes = np.frombuffer(("\0" * k).join(folded).encode("ascii") + b"\0" * k, dtype=np.uint8).astype(np.uint64)
    keys = np.zeros(codes.size - k + 1, dtype=np.uint64)
    for t in range(k):
        keys |= codes[t:t + keys.size] << np.uint64(7 * t)
    lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
    counts = np.maximum(lengths - k + 1, 1)
    keep = np.repeat(np.tile([True, False], len(texts)), np.column_stack((counts, lengths + k - counts)).ravel())
    docs = np.repeat(np.arange(len(texts), dtype=np.uint64), counts)
    tagged = _distinct((docs << np.uint64(7 * k)) | keys[keep[:keys.size]])
    offsets = np.searchsorted(tagged >> np.uint64(7 * k), np.arange(len(texts) + 1, dtype=np.uint64))
    return tagged & np.uint64((1 << 7 * k) - 1), offsets


def word_shingle_ids(texts: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique word k-gram ids per text, and offsets: equal ids exactly when the k-grams are equal.

    Words are those of `text.casefold().replace("\\0", " ").split()`, each mapped to an integer
    (1, 2, ...; 0 pads a text of fewer than k words to one k-gram). A k-gram's id is built a
    word at a time, re-ranking (previous id, next word) to dense integers, so nothing is hashed.
    """
    vocab: dict[str, int] = {}
    words = [[vocab.setdefault(w, len(vocab) + 1) for w in t.casefold().replace("\0", " ").split()] for t in texts]
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    flat = np.fromiter((w for text in words for w in text), dtype=np.int64, count=int(lengths.sum()))
    ids = np.zeros(flat.size + k * len(words), dtype=np.int64)  # each text's words, then k zeros
    ids[np.arange(flat.size) + k * np.repeat(np.arange(len(words)), lengths)] = flat
    counts = np.maximum(lengths - k + 1, 1)
    starts = np.concatenate(([0], np.cumsum(lengths + k)[:-1]))
    first = np.arange(int(counts.sum())) + np.repeat(starts - (np.cumsum(counts) - counts), counts)
    gram = ids[first]
    for t in range(1, k):
        gram = _dense(gram * (len(vocab) + 1) + ids[first + t])
    docs = np.repeat(np.arange(len(texts), dtype=np.uint64), counts)
    tagged = _distinct((docs << np.uint64(32)) | gram.astype(np.uint64))
    offsets = np.searchsorted(tagged >> np.uint64(32), np.arange(len(texts) + 1, dtype=np.uint64))
    return tagged & np.uint64(0xFFFFFFFF), offsets


def _dense(values: np.ndarray) -> np.ndarray:
    """Each value's rank among the distinct values."""
    return np.searchsorted(_distinct(values), values)


def true_pairs(keys: np.ndarray, offsets: np.ndarray, threshold: float, *, shared: int = 4) -> np.ndarray:
    """Codes i * n + j (i < j) of all pairs whose sets of exact shingle keys have Jaccard >= threshold.

    Prefix filter: order tokens rarest first. If J(x, y) >= t then |x & y| >= ceil(t |x|), so the
    first c common tokens lie within the first |x| - ceil(t |x|) + c tokens of x (and likewise of
    y): a pair that shares fewer than min(c, ceil(t max(|x|, |y|))) tokens there cannot qualify.
    The survivors that also pass the size filter are verified exactly.
    """
    n = len(offsets) - 1
    sizes = np.diff(offsets)
    docs = np.repeat(np.arange(n, dtype=np.uint64), sizes)
    ranked = np.sort((docs << np.uint64(32)) | _rarest_first(keys))  # per document, rarest first
    need = np.ceil(threshold * sizes - 1e-9).astype(np.int64)
    within = np.arange(len(keys)) - np.repeat(offsets[:-1], sizes)
    probe = ranked[within < np.repeat(sizes - need + shared, sizes)]
    i, j = _shared_prefix_pairs(probe & np.uint64(0xFFFFFFFF), probe >> np.uint64(32), need, shared)
    big, small = np.maximum(sizes[i], sizes[j]), np.minimum(sizes[i], sizes[j])
    keep = small >= threshold * big - 1e-9
    i, j = i[keep], j[keep]
    inter = _intersections(keys, offsets, i, j)
    return (i * n + j)[inter >= threshold * (sizes[i] + sizes[j] - inter) - 1e-9]


def _shared_prefix_pairs(token: np.ndarray, doc: np.ndarray, need: np.ndarray, shared: int,
                         batch: int = 8_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) sharing at least min(shared, need_i, need_j) prefix tokens.

    Pairs are enumerated per posting list, a range of first documents at a time, so memory stays
    bounded although their number grows with the square of the corpus size.
    """
    ordered = np.sort((token << np.uint64(32)) | doc)
    token, doc = ordered >> np.uint64(32), (ordered & np.uint64(0xFFFFFFFF)).astype(np.int64)
    starts = np.flatnonzero(np.concatenate(([True], token[1:] != token[:-1])))
    sizes = np.diff(np.append(starts, len(token)))
    partners = np.repeat(starts + sizes, sizes) - np.arange(len(token)) - 1  # later docs, same token
    load = np.cumsum(np.bincount(doc, weights=partners, minlength=len(need)))
    cuts = np.searchsorted(load, np.arange(batch, load[-1] if len(load) else 0, batch))
    found_i, found_j = [], []
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(need)]):
        left = np.flatnonzero((doc >= lo) & (doc < hi) & (partners > 0))
        count = partners[left]
        right = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count) + np.repeat(left, count) + 1
        codes, times = _count(doc[np.repeat(left, count)] * len(need) + doc[right])
        i, j = codes // len(need), codes % len(need)
        keep = times >= np.minimum(shared, np.maximum(need[i], need[j]))
        found_i.append(i[keep])
        found_j.append(j[keep])
    return np.concatenate(found_i), np.concatenate(found_j)


def _rarest_first(keys: np.ndarray) -> np.ndarray:
    """Rank of each key's token by (corpus frequency, value)."""
    tokens, counts = _count(keys)
    rank = np.empty(len(tokens), np.uint64)
    rank[np.lexsort((tokens, counts))] = np.arange(len(tokens), dtype=np.uint64)
    return rank[np.searchsorted(tokens, keys)]


def _intersections(keys: np.ndarray, offsets: np.ndarray, i: np.ndarray, j: np.ndarray,
                   cells: int = 1 << 21) -> np.ndarray:
    """|set i & set j| per pair: both sets in one padded row, rows sorted, equal neighbours counted.

    A set holds each key once, so a key appears twice in a row exactly when both sets hold it.
    Pairs are taken in order of their total size, so the rows of a batch have similar widths.
    """
    left, right = offsets[i + 1] - offsets[i], offsets[j + 1] - offsets[j]
    total = left + right
    order = np.argsort(total, kind="stable")
    out = np.zeros(len(i), np.int64)
    step = max(1, cells // max(int(total.max(initial=1)), 1))
    for lo in range(0, len(order), step):
        pairs = order[lo:lo + step]
        column = np.arange(int(total[pairs].max()))
        first = column < left[pairs, None]
        where = np.where(first, offsets[i[pairs], None] + column, offsets[j[pairs], None] + column - left[pairs, None])
        rows = np.where(column < total[pairs, None], keys[np.minimum(where, len(keys) - 1)], np.uint64(2**64 - 1))
        rows.sort(axis=1)
        equal = (rows[:, 1:] == rows[:, :-1]) & (column[:-1] < total[pairs, None] - 1)
        out[pairs] = equal.sum(axis=1)
    return out


def _distinct(values: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def _count(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and how often each occurs (sort-based: numpy 2.4's hashed np.unique is slow)."""
    ordered = np.sort(values)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.append(starts, len(ordered)))


# --- the two methods ------------------------------------------------------------------------

def run_project(texts: list[str], settings: NearDupSettings) -> np.ndarray:
    result = near_duplicates(texts, settings)
    return result.pairs[:, 0] * len(texts) + result.pairs[:, 1]


def datasketch_shingles(texts: list[str], shingle: str, k: int) -> list[list[bytes]]:
    """The project's shingles (case-folded character or word k-grams), as the byte strings datasketch hashes."""
    out = []
    for text in texts:
        text = text.casefold()
        if shingle == "word":
            words = text.replace("\0", " ").split()
            out.append([" ".join(words[i:i + k]).encode("utf-8") for i in range(max(len(words) - k + 1, 1))])
        else:
            out.append([text[i:i + k].encode("utf-8") for i in range(max(len(text) - k + 1, 1))])
    return out


def run_datasketch(shingles: list[list[bytes]], threshold: float, num_perm: int) -> tuple[np.ndarray, dict]:
    """Candidate pair codes from MinHash.bulk + MinHashLSH insert all + query all, and seconds per part."""
    from datasketch import MinHash, MinHashLSH

    sketches, bulk, _ = timed(lambda: MinHash.bulk(shingles, num_perm=num_perm))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    _, insert, _ = timed(lambda: [lsh.insert(i, sketch) for i, sketch in enumerate(sketches)])
    n = len(shingles)
    codes, query, _ = timed(lambda: [min(i, j) * n + max(i, j) for i, sketch in enumerate(sketches)
                                   for j in lsh.query(sketch) if j != i])
    parts = {"bulk": round(bulk, 3), "insert": round(insert, 3), "query": round(query, 3)}
    return _distinct(np.array(codes, dtype=np.int64)), parts


# --- measuring ------------------------------------------------------------------------------

def scores(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(recall, precision) of found pair codes against the true ones."""
    hits = int(np.isin(found, truth).sum())
    return hits / max(len(truth), 1), hits / len(found) if len(found) else 1.0


CORPORA = {"edits": make_corpus, "fragments": make_fragment_corpus}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shingle", choices=["word", "char", "both"], default="both",
                        help="word 3-grams, char 5-grams, or both in one run")
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="edits",
                        help="edits: edited copies of Zipf sentences; fragments: texts assembled from shared phrases")
    parser.add_argument("--skip-datasketch", action="store_true", help="time and score the project only")
    args = parser.parse_args(argv)

    texts = CORPORA[args.corpus](args.docs, args.seed)
    report: dict[str, Any] = {"docs": args.docs, "corpus": args.corpus, "threshold": args.threshold, "num_perm": args.num_perm}
    for shingle in ("word", "char") if args.shingle == "both" else (args.shingle,):
        report[shingle] = compare(texts, shingle, args)
    report["memory"] = "RSS per phase: VmHWM reset via /proc/self/clear_refs (else ru_maxrss)"
    print(json.dumps(report))
    return 0


def compare(texts: list[str], shingle: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time and score the project (and datasketch) with one kind of shingle against exact ground truth."""
    near = TextNearParams(threshold=args.threshold, group_threshold=args.threshold, num_perm=args.num_perm, shingle=shingle)
    settings = NearDupSettings.from_params(near, seed=args.seed)
    project = _phase(lambda: run_project(texts, settings))
    exact = word_shingle_ids if shingle == "word" else packed_shingles
    truth = true_pairs(*exact(texts, settings.k), args.threshold)
    out: dict[str, Any] = {"size": settings.k, "bands_rows": [settings.bands, settings.rows],
                           "true_pairs": len(truth), "project": _scored(project, truth, len(texts))}
    if not args.skip_datasketch:
        shingles, shingle_seconds, _ = timed(lambda: datasketch_shingles(texts, shingle, settings.k))
        datasketch = _phase(lambda: run_datasketch(shingles, args.threshold, args.num_perm))
        out["datasketch"] = {**_scored(datasketch, truth, len(texts)), "shingle_seconds_untimed": round(shingle_seconds, 3)}
        out["ratio"] = round(datasketch["seconds"] / project["seconds"], 2)  # docs/s, project over datasketch
    return out


def _phase(fn: Callable[[], Any]) -> dict[str, Any]:
    result, seconds, peak, extra = measured(fn)
    found, parts = result if isinstance(result, tuple) else (result, None)
    phase = {"found": found, "seconds": seconds, "peak_rss_mib": peak, "phase_rss_mib": extra}
    return {**phase, "seconds_by_part": parts} if parts else phase


def _scored(phase: dict[str, Any], truth: np.ndarray, docs: int) -> dict[str, Any]:
    """The JSON fields of one method: speed, pairs, recall, precision and memory."""
    recall, precision = scores(phase["found"], truth)
    fields = {"seconds": round(phase["seconds"], 3), "docs_per_s": round(docs / phase["seconds"]),
              "pairs": len(phase["found"]), "recall": round(recall, 4), "precision": round(precision, 4)}
    return {**fields, **{k: v for k, v in phase.items() if k not in ("found", "seconds")}}


if __name__ == "__main__":
    raise SystemExit(main())
