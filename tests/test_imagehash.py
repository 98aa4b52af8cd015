"""Unit tests for pipeline.steps.imagehash: robust hashes, exact multi-index search, clusters."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from pipeline.steps.imagehash import (
    brute_force_pairs,
    cluster_labels,
    hamming,
    hash_image,
    hash_images,
    near_duplicate_groups,
    near_pairs,
    plan_chunks,
)

METHODS = ["phash", "dhash"]


def picture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth random colour field with a few hard-edged blobs: photo-like, distinct per seed."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    image = coarse.resize(size, Image.Resampling.BICUBIC)
    for _ in range(4):
        x, y = int(rng.integers(0, size[0] - 30)), int(rng.integers(0, size[1] - 30))
        image.paste(tuple(int(c) for c in rng.integers(0, 256, 3)), (x, y, x + 30, y + 30))
    return image


def jpeg(image: Image.Image, quality: int = 70) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def variants(image: Image.Image) -> list[Image.Image | bytes]:
    """The same picture re-encoded, resized to 90% and slightly brightened."""
    smaller = image.resize((image.width * 9 // 10, image.height * 9 // 10), Image.Resampling.BICUBIC)
    return [jpeg(image), smaller, ImageEnhance.Brightness(image).enhance(1.1)]


def planted_hashes(n: int, *, seed: int) -> np.ndarray:
    """Random 64-bit hashes, a tenth of them overwritten by copies of others with 0 to 12 bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    for _ in range(n // 10):
        flips = rng.choice(64, size=int(rng.integers(0, 13)), replace=False)
        hashes[rng.integers(0, n)] = hashes[rng.integers(0, n)] ^ np.uint64(sum(1 << int(b) for b in flips))
    return hashes


# --- hashing --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_edited_copies_stay_close_and_other_pictures_far(method):
    """Re-encoding, resizing and re-lighting move a hash a few bits; another picture moves it many."""
    pictures = [picture(seed) for seed in range(6)]
    hashes = [hash_image(p, method=method) for p in pictures]
    for image, original in zip(pictures, hashes):
        assert max(hamming(original, hash_image(v, method=method)) for v in variants(image)) <= 6
    assert min(hamming(a, b) for k, a in enumerate(hashes) for b in hashes[k + 1:]) >= 16


@pytest.mark.parametrize("method", METHODS)
def test_bytes_pil_and_batch_agree(method):
    image = picture(1)
    data = jpeg(image, 95)
    single = hash_image(data, method=method)
    assert isinstance(single, int) and 0 <= single < 2**64
    assert single == hash_image(Image.open(io.BytesIO(data)), method=method)
    batch = hash_images([data, image], method=method)
    assert batch.dtype == np.uint64 and batch.tolist() == [single, hash_image(image, method=method)]


def test_hashes_are_deterministic_and_methods_differ():
    image = picture(2)
    assert hash_image(image) == hash_image(image.copy())
    assert hash_image(image, method="phash") != hash_image(image, method="dhash")


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="'method' parameter.*Got 'ahash'"):
        hash_image(picture(0), method="ahash")


def test_real_photos_are_far_apart_and_their_jpeg_copies_close(shared_datasets: Path):
    files = sorted((shared_datasets / "hymenoptera" / "val" / "bees").iterdir())[:24]
    hashes = hash_images([f.read_bytes() for f in files])
    assert len(near_pairs(hashes, 8)) == 0
    copies = hash_images([jpeg(Image.open(f).convert("RGB")) for f in files])
    assert int(np.bitwise_count(hashes ^ copies).max()) <= 4


# --- near-duplicate search ------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 5, 8, 10, 12])
def test_multi_index_search_equals_brute_force(threshold):
    hashes = planted_hashes(3000, seed=threshold)
    expected = brute_force_pairs(hashes, threshold)
    assert len(expected) >= 10  # the planted pairs are there to be found
    assert np.array_equal(near_pairs(hashes, threshold), expected)


@pytest.mark.parametrize("threshold", [0, 3, 6, 9])
def test_exact_chunk_pigeonhole_plan_equals_brute_force(threshold):
    """threshold + 1 chunks searched at radius 0, the classic layout, finds the same pairs."""
    hashes = planted_hashes(2000, seed=100 + threshold)
    assert {c.radius for c in plan_chunks(len(hashes), threshold, chunks=threshold + 1)} == {0}
    assert np.array_equal(near_pairs(hashes, threshold, chunks=threshold + 1), brute_force_pairs(hashes, threshold))


def test_pairs_are_sorted_with_distances_and_identical_hashes_all_pair_up():
    hashes = np.array([5, 7, 5, 2**63, 5, 7], dtype=np.uint64)
    pairs = near_pairs(hashes, 1)
    assert pairs.dtype == np.int64
    assert pairs.tolist() == [[0, 1, 1], [0, 2, 0], [0, 4, 0], [0, 5, 1], [1, 2, 1], [1, 4, 1],
                              [1, 5, 0], [2, 4, 0], [2, 5, 1], [4, 5, 1]]


def test_search_does_not_depend_on_input_order():
    hashes = planted_hashes(2000, seed=7)
    perm = np.random.default_rng(0).permutation(len(hashes))
    shuffled = near_pairs(hashes[perm], 6)
    back = {tuple(sorted((int(perm[i]), int(perm[j])))) + (d,) for i, j, d in shuffled.tolist()}
    assert back == {tuple(row) for row in near_pairs(hashes, 6).tolist()}
    assert np.array_equal(near_pairs(hashes, 6), near_pairs(hashes, 6))


@pytest.mark.parametrize("hashes", [[], [123]])
def test_nothing_to_pair(hashes):
    assert near_pairs(hashes, 4).shape == (0, 3)
    assert brute_force_pairs(hashes, 4).shape == (0, 3)


@pytest.mark.parametrize("threshold", [-1, 65, 2.5, True])
def test_bad_threshold_is_refused(threshold):
    with pytest.raises(ValueError, match="'threshold' parameter"):
        near_pairs([1, 2], threshold)


# --- clusters -------------------------------------------------------------------------------

def test_clusters_follow_chains_and_take_the_smallest_index():
    pairs = np.array([[3, 4, 1], [1, 2, 1], [0, 1, 1], [5, 6, 1], [2, 6, 1]])
    assert cluster_labels(8, pairs).tolist() == [0, 0, 0, 3, 3, 0, 0, 7]
    assert cluster_labels(8, pairs[::-1]).tolist() == [0, 0, 0, 3, 3, 0, 0, 7]


def test_groups_chain_through_intermediates_whatever_the_order():
    """a-b and b-c are within 2 bits, a-c is not: all three form one group named by the smallest id."""
    base = 0x0123456789ABCDEF
    rows = {"r3": base, "r1": base ^ 0b11, "r2": base ^ 0b1111, "r0": 2**64 - 1 - base}
    groups = dict(zip(rows, near_duplicate_groups(list(rows), list(rows.values()), threshold=2)))
    assert groups == {"r1": "r1", "r2": "r1", "r3": "r1", "r0": "r0"}
    reordered = ["r2", "r0", "r3", "r1"]
    again = near_duplicate_groups(reordered, [rows[k] for k in reordered], threshold=2)
    assert dict(zip(reordered, again)) == groups
