"""Unit tests for pipeline.steps.neardup: shingles, MinHash, banding, verification, clusters, calibration."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from datasketch import MinHashLSH

from pipeline.params import TextNearParams
from pipeline.steps.neardup import (
    LSH_WEIGHTS,
    NearDupSettings,
    Shingles,
    calibrate,
    cluster_labels,
    estimated_jaccard,
    exact_jaccard,
    minhash_signatures,
    near_duplicates,
    optimal_bands,
    shingle_hashes,
    shingle_sets,
)

def settings(*, seed: int = 0, screen: float | None = 4.0, chunk_size: int = 20_000, **near) -> NearDupSettings:
    """The merge pass for a `dedup.text` section made of `near` (validated as params are)."""
    return NearDupSettings.from_params(TextNearParams(**near), seed=seed, screen=screen, chunk_size=chunk_size)


WORDS = [f"{a}{b}{c}" for a in "bcdfgklmnprstvz" for b in "aeiou" for c in "lmnrst"]  # 450 words


def sentence(gen: np.random.Generator, words: int = 18) -> str:
    return " ".join(gen.choice(WORDS, size=words))


def replace_word(text: str, at: int, word: str = "qqqqq") -> str:
    words = text.split()
    words[at] = word
    return " ".join(words)


def char_jaccard(a: str, b: str, k: int = 5) -> float:
    """Reference Jaccard of character k-gram string sets."""
    def grams(t: str) -> set[str]:
        t = t.casefold()
        return {t[i:i + k] for i in range(max(len(t) - k + 1, 1))}
    sa, sb = grams(a), grams(b)
    return len(sa & sb) / len(sa | sb)


@pytest.fixture
def corpus() -> tuple[list[str], set[tuple[int, int]]]:
    """40 distinct sentences and 10 one-word edits of the first 10 (indices 40..49)."""
    gen = np.random.default_rng(7)
    texts = [sentence(gen) for _ in range(40)]
    texts += [replace_word(texts[i], 3 + i % 10) for i in range(10)]
    return texts, {(i, 40 + i) for i in range(10)}


def test_planted_near_duplicates_are_found_and_distinct_texts_are_not(corpus):
    texts, planted = corpus
    result = near_duplicates(texts, settings(threshold=0.7))
    assert {tuple(p) for p in result.pairs.tolist()} == planted
    assert result.clusters() == [[i, 40 + i] for i in range(10)]
    assert (result.jaccard >= 0.7).all()
    assert all(result.labels[i] == i for i in range(10, 40))


def test_exact_jaccard_matches_string_sets(corpus):
    texts, planted = corpus
    pairs = np.array(sorted(planted) + [(0, 1), (2, 3)])
    got = exact_jaccard(shingle_sets(texts), pairs)
    assert got == pytest.approx([char_jaccard(texts[i], texts[j]) for i, j in pairs])


def test_chains_cluster_transitively():
    gen = np.random.default_rng(3)
    a = sentence(gen, 16)
    b = replace_word(a, 2)
    c = replace_word(b, 12, "zzzzzz")
    threshold = 0.75
    assert char_jaccard(a, b) >= threshold and char_jaccard(b, c) >= threshold > char_jaccard(a, c)
    texts = [c, sentence(gen), a, b]
    result = near_duplicates(texts, settings(threshold=threshold, bands=32, rows=4))
    assert [2, 0] not in result.pairs.tolist() and [0, 2] not in result.pairs.tolist()
    assert result.clusters() == [[0, 2, 3]]
    assert result.labels.tolist() == [0, 1, 0, 0]


def test_cluster_labels_match_a_reference_union_find():
    gen = np.random.default_rng(0)
    pairs = np.sort(gen.integers(0, 300, size=(200, 2)), axis=1)
    parent = list(range(300))

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        ri, rj = find(i), find(j)
        parent[max(ri, rj)] = min(ri, rj)
    expected = [find(x) for x in range(300)]
    members: dict[int, int] = {}
    for x, root in enumerate(expected):
        members.setdefault(root, x)
    assert cluster_labels(300, pairs).tolist() == [members[root] for root in expected]


def test_signatures_do_not_depend_on_batch_or_order(corpus):
    texts, _ = corpus
    whole = minhash_signatures(shingle_hashes(texts), seed=5)
    alone = np.vstack([minhash_signatures(shingle_hashes([t]), seed=5) for t in texts])
    reversed_ = minhash_signatures(shingle_hashes(texts[::-1]), seed=5)[::-1]
    assert whole.dtype == np.uint32 and whole.shape == (50, 128)
    assert np.array_equal(whole, alone) and np.array_equal(whole, reversed_)
    assert not np.array_equal(whole, minhash_signatures(shingle_hashes(texts), seed=6))


def test_results_do_not_depend_on_chunk_size_or_order(corpus):
    texts, _ = corpus
    base = near_duplicates(texts, settings(threshold=0.7))
    small = near_duplicates(texts, settings(threshold=0.7, chunk_size=3))
    order = np.random.default_rng(1).permutation(len(texts))
    shuffled = near_duplicates([texts[i] for i in order], settings(threshold=0.7))
    assert np.array_equal(base.pairs, small.pairs) and np.array_equal(base.jaccard, small.jaccard)
    relabelled = {tuple(sorted(p)) for p in order[shuffled.pairs].tolist()}
    assert relabelled == {tuple(p) for p in base.pairs.tolist()}


def test_deterministic_across_runs(corpus):
    texts, _ = corpus
    first, second = near_duplicates(texts), near_duplicates(texts)
    assert np.array_equal(first.labels, second.labels) and np.array_equal(first.pairs, second.pairs)
    assert shingle_hashes(["stable hash"]).values.tolist() == shingle_hashes(["stable hash"]).values.tolist()


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 128), (0.9, 256), (0.7, 64)])
def test_threshold_banding_matches_datasketch(threshold, num_perm):
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert optimal_bands(threshold, num_perm) == (lsh.b, lsh.r)


def test_default_banding_favours_recall_because_candidates_are_verified():
    chosen = settings(threshold=0.8)
    bands, rows = chosen.bands, chosen.rows
    assert bands * rows <= 128
    assert (bands, rows) == (14, 9)  # datasketch picks (9, 13) with equal weights
    assert 1 - (1 - 0.8**rows) ** bands > 0.85  # collision probability at the threshold


def test_explicit_bands_and_rows_are_respected(corpus):
    texts, _ = corpus
    result = near_duplicates(texts, settings(threshold=0.7, bands=4, rows=8))
    assert (result.bands, result.rows) == (4, 8)
    with pytest.raises(ValueError, match=r"bands x rows \(20 x 8\) exceeds num_perm 128"):
        TextNearParams(bands=20, rows=8)
    with pytest.raises(ValueError, match="give both bands and rows"):
        TextNearParams(bands=4)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        TextNearParams(threshold=1.5)


def test_the_group_and_certificate_passes_choose_their_own_banding():
    near = TextNearParams(threshold=0.8, bands=4, rows=8, verify="estimate")
    merge, group = NearDupSettings.from_params(near), NearDupSettings.from_params(near, loose=True)
    certify = NearDupSettings.from_params(near, certify=True, seed=7)
    assert (merge.bands, merge.rows, merge.verify) == (4, 8, "estimate")
    assert (group.threshold, (group.bands, group.rows)) == (0.5, optimal_bands(0.5, 128, weights=LSH_WEIGHTS))
    assert ((certify.bands, certify.rows), certify.verify, certify.seed) == ((14, 9), "exact", 7)


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_verification_removes_false_candidates(corpus, verify):
    texts, planted = corpus
    texts = texts + [texts[i].upper() for i in range(20, 25)]  # 50..54: same after case folding
    loose = settings(threshold=0.9, bands=64, rows=2, verify=verify, screen=None)  # many weak candidates
    result = near_duplicates(texts, loose)
    assert result.candidates > len(planted) + 5
    assert result.pairs.tolist() == [[i, 30 + i] for i in range(20, 25)]
    assert result.jaccard.tolist() == [1.0] * 5


def test_sketch_screen_drops_chance_candidates_but_no_duplicate(corpus):
    texts, planted = corpus
    weak = settings(threshold=0.7, bands=64, rows=2, screen=None)  # every shared band of 2 values collides
    unscreened = near_duplicates(texts, weak)
    screened = near_duplicates(texts, settings(threshold=0.7, bands=64, rows=2, screen=4.0))
    assert screened.candidates < unscreened.candidates / 2
    assert screened.pairs.tolist() == unscreened.pairs.tolist()
    assert np.array_equal(screened.labels, unscreened.labels)
    assert {tuple(p) for p in screened.pairs.tolist()} >= planted


def test_word_shingles_case_fold_and_whitespace():
    texts = ["Alpha  beta gamma delta epsilon", "alpha beta\tGAMMA delta epsilon", "zeta eta theta iota kappa"]
    result = near_duplicates(texts, settings(shingle="word", threshold=0.9))
    assert result.pairs.tolist() == [[0, 1]] and result.jaccard.tolist() == [1.0]
    assert shingle_hashes(texts, shingle="word").sizes().tolist() == [3, 3, 3]


def test_case_folding_is_unicode_aware():
    folded = shingle_hashes(["Straße 🙂 ok", "STRASSE 🙂 OK"])
    assert folded.sizes().tolist() == [8, 8]
    assert folded.values[:8].tolist() == folded.values[8:].tolist()


def test_empty_and_tiny_inputs():
    empty = near_duplicates([])
    assert empty.labels.shape == (0,) and empty.pairs.shape == (0, 2) and empty.clusters() == []
    one = near_duplicates(["just one"])
    assert one.labels.tolist() == [0] and one.pairs.shape == (0, 2)
    tiny = near_duplicates(["", "ab", "AB", "", "abc"])  # shorter than k: one shingle of the whole text
    assert tiny.clusters() == [[0, 3], [1, 2]]
    assert shingle_hashes(["", "ab", "abcdefg"]).sizes().tolist() == [1, 1, 3]
    assert near_duplicates(["", " "], settings(shingle="word")).clusters() == [[0, 1]]


def test_calibrate_reports_precision_recall_and_a_suggestion(corpus):
    texts, planted = corpus
    gen = np.random.default_rng(11)
    labelled = [(texts[i], texts[j], True) for i, j in sorted(planted)]
    labelled += [(texts[i], texts[i + 1], False) for i in range(20, 30)]
    labelled += [(texts[i], replace_word(replace_word(texts[i], 2), 8), False) for i in range(30, 35)]
    labelled += [(sentence(gen), sentence(gen), False) for _ in range(5)]
    report = calibrate(labelled, settings(threshold=0.7), target_precision=0.95)
    json.dumps(report)  # plain JSON
    assert report["pairs"] == 30 and report["duplicates"] == 10
    configured = report["configured"]
    assert configured["recall"] == 1.0 and configured["precision"] == 1.0
    suggested = report["suggested"]
    assert suggested["precision"] >= 0.95 and suggested["recall"] == 1.0
    assert suggested["bands"] * suggested["rows"] <= 128
    with pytest.raises(ValueError, match="at least one labelled pair"):
        calibrate([])


# --- the reference shingler: the per-document implementation the hash values were fixed with ---

def reference_shingle_hashes(texts: list[str], shingle: str, k: int) -> Shingles:
    """The step's shingles as first written (Python case folding and splitting per text): the values to keep."""
    folded = [text.casefold() for text in texts]
    if shingle == "char":
        pad = "\0" * k
        lengths = np.fromiter(map(len, folded), dtype=np.int64, count=len(folded))
        return _reference_kgrams(np.frombuffer((pad.join(folded) + pad).encode("utf-32-le"), dtype=np.uint32), lengths, k)
    joined = "\0".join(" ".join(text.replace("\0", " ").split()) for text in folded)
    codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    gap = (codes == 32) | (codes == 0)
    begin = ~gap & np.concatenate(([True], gap[:-1]))
    begins = np.flatnonzero(begin)
    if begins.size == 0:
        tokens, counts = np.empty(0, np.uint32), np.zeros(len(folded), np.int64)
    else:
        position = np.arange(codes.size) - begins[np.maximum(np.cumsum(begin) - 1, 0)]
        position[gap] = 0
        weights = _reference_fmix32(np.arange(int(position.max()) + 1, dtype=np.uint32) * np.uint32(0x9E3779B9)
                                    + np.uint32(0x7F4A7C15)) | np.uint32(1)
        weighted = codes * weights[position]
        weighted[gap] = 0
        sums = np.add.reduceat(weighted, begins)
        sizes = np.add.reduceat((~gap).astype(np.uint32), begins)
        tokens = _reference_fmix32(sums ^ (sizes * np.uint32(0x9E3779B9)))
        counts = np.bincount(np.cumsum(codes == 0)[begins], minlength=len(folded)).astype(np.int64)
    docs = np.repeat(np.arange(len(counts)), counts)
    padded = np.zeros(tokens.size + k * len(counts), dtype=np.uint32)
    padded[np.arange(tokens.size) + docs * k] = tokens
    return _reference_kgrams(padded, counts, k)


def _reference_kgrams(padded: np.ndarray, lengths: np.ndarray, k: int) -> Shingles:
    windows = padded.size - k + 1
    h = padded[:windows].copy()
    for t in range(1, k):
        h *= np.uint32(0x01000193)
        h += padded[t:t + windows]
    counts = np.maximum(lengths - k + 1, 1)
    blocks = np.column_stack((counts, lengths + k - counts)).ravel()
    keep = np.repeat(np.tile(np.array([True, False]), len(lengths)), blocks)[:windows]
    return Shingles(values=_reference_fmix32(h[keep]), offsets=np.concatenate(([0], np.cumsum(counts))))


def _reference_fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


SPACES = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]  # all that str.split() splits on
PIECES = [
    "Straße", "STRASSE", "İstanbul", "ΣΑΣ ΌΣΟΣ", "ǅ", "ﬁ", "ΐ", "ŉ", "\u212a", "e\u0301\u0302", "क्षि", "한국어",
    "中文字", "العربية", "עִבְרִית", "Ελληνικά", "кириллица", "🙂", "👩\u200d👩\u200d👧", "🇫🇷", "𝔘𝔫𝔦", "\U0010ffff",
    "\u200b", "\u180e", "\ufeff", "\u2060", "\x01", "\x1b", "\x7f", "ABC", "word", "Q", "x" * 3000, "ß" * 1500,
    "\0", "\0\0", "",
]


def adversarial_texts(seed: int, *, ascii_only: bool) -> list[str]:
    """Texts made of the pieces and every Python whitespace character, with empty and blank texts among them."""
    pool = [p for p in PIECES + SPACES if p.isascii() or not ascii_only]
    gen = np.random.default_rng(seed)
    texts = ["".join(pool[i] for i in gen.integers(0, len(pool), size=gen.integers(0, 14))) for _ in range(400)]
    blank = [s for s in SPACES if s.isascii() or not ascii_only]
    return texts + ["", "".join(blank), "\0", " a ", "a", "".join(blank) + "x" * 5000 + "".join(blank)]


@pytest.mark.parametrize("ascii_only", [False, True])
@pytest.mark.parametrize("shingle", ["char", "word"])
def test_shingle_hashes_keep_the_reference_values_on_adversarial_unicode(shingle, ascii_only):
    texts = adversarial_texts(5, ascii_only=ascii_only)
    for k in range(1, 6):
        for batch in (texts, texts[:1], ["", " "], texts[-3:]):
            expected, got = reference_shingle_hashes(batch, shingle, k), shingle_hashes(batch, shingle=shingle, size=k)
            assert got.values.dtype == np.uint32 and got.offsets.dtype == np.int64
            assert np.array_equal(got.offsets, expected.offsets), (shingle, k)
            assert np.array_equal(got.values, expected.values), (shingle, k)
        expected, sets = reference_shingle_hashes(texts, shingle, k), shingle_sets(texts, shingle=shingle, size=k)
        unique = [np.unique(values) for values in np.split(expected.values, expected.offsets[1:-1])]
        assert np.array_equal(sets.values, np.concatenate(unique))
        assert sets.sizes().tolist() == [u.size for u in unique]


@pytest.mark.parametrize("verify", ["exact", "estimate"])
def test_verification_from_the_kept_sets_matches_verification_from_the_texts(corpus, verify):
    texts, _ = corpus
    result = near_duplicates(texts, settings(threshold=0.5, bands=64, rows=2, verify=verify, screen=None))
    if verify == "exact":
        expected = exact_jaccard(shingle_sets(texts), result.pairs)
    else:  # signatures over every shingle, repeats included, as the estimate was first defined
        expected = estimated_jaccard(minhash_signatures(shingle_hashes(texts)), result.pairs)
    assert len(result.pairs) >= 10 and np.array_equal(result.jaccard, expected)
