"""Unit tests for pipeline.steps.augment: variant ids, provenance and order-free determinism."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import text_records
from pipeline.params import ImageAugmentParams, TextAugmentParams
from pipeline.records import text_hash
from pipeline.steps.augment import augment_images, augment_texts, variant_id

TEXTS = [
    ("r1", "the quick brown fox jumps over the lazy dog near the river bank"),
    ("r2", "my parcel has not arrived and the tracking page shows nothing at all"),
    ("r3", "please refund the second charge on my card from last tuesday evening"),
]
DEFAULT_TRANSFORMS = {t["__class_fullname__"] for t in ImageAugmentParams().transform["transform"]["transforms"]}


def _png(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [("i1", _png(1)), ("i2", _png(2)), ("i3", _png(3))]


def _key(variants) -> dict[str, tuple]:
    return {v.id: (v.parent_id, v.content_hash, v.op, v.text, v.image) for v in variants}


# --- text -----------------------------------------------------------------------------------

def test_text_variants_have_stable_ids_parents_and_ops():
    """Each record gets `variants` variants with ids from (parent, index), its parent, and an op naming the augmenters."""
    params = TextAugmentParams(variants=3)
    out = augment_texts(TEXTS, params, seed=1)
    assert len(out) == 3 * len(TEXTS)
    for record_id, _ in TEXTS:
        mine = [v for v in out if v.parent_id == record_id]
        assert [v.id for v in mine] == [variant_id(record_id, k) for k in range(3)]
        for k, v in enumerate(mine):
            op = json.loads(v.op)
            assert op["op"] == "augment" and op["variant"] == k
            assert [a["name"] for a in op["augmenters"]] == ["KeyboardAug"]
            assert v.content_hash == text_hash(v.text)
    assert len({v.id for v in out}) == len(out)


def test_variant_id_is_stable_and_distinct():
    """variant_id depends only on (parent, index)."""
    assert variant_id("r1", 0) == variant_id("r1", 0)
    assert len({variant_id("r1", 0), variant_id("r1", 1), variant_id("r2", 0)}) == 3


def test_text_variants_do_not_depend_on_order_or_chunking():
    """A variant is the same whether its record comes first, last or alone in a chunk."""
    params = TextAugmentParams(variants=2)
    whole = _key(augment_texts(TEXTS, params, seed=5))
    reversed_ = _key(augment_texts(TEXTS[::-1], params, seed=5))
    singles = {}
    for item in TEXTS[::-1]:
        singles |= _key(augment_texts([item], params, seed=5))
    assert reversed_ == whole
    assert singles == whole


def test_text_variants_change_with_seed():
    """Another seed gives other variants."""
    params = TextAugmentParams(variants=2)
    one = [v.text for v in augment_texts(TEXTS, params, seed=1)]
    two = [v.text for v in augment_texts(TEXTS, params, seed=2)]
    assert one != two


def test_zero_variants_gives_nothing():
    """variants: 0 turns augmentation off."""
    assert augment_texts(TEXTS, TextAugmentParams(variants=0), seed=1) == []


# --- images ---------------------------------------------------------------------------------

def test_image_variants_are_pngs_with_provenance():
    """Image variants decode to the input size, name their parent and list the applied transforms."""
    params = ImageAugmentParams(variants=2)
    out = augment_images(IMAGES, params, seed=3)
    assert [v.id for v in out] == [variant_id(i, k) for i, _ in IMAGES for k in range(2)]
    applied_names = set()
    for v in out:
        with Image.open(io.BytesIO(v.image)) as image:
            assert image.format == "PNG" and image.size == (32, 32)
        op = json.loads(v.op)
        assert op["op"] == "augment" and "applied" in op
        names = {step[0] for step in op["applied"]}
        assert names <= DEFAULT_TRANSFORMS
        applied_names |= names
    assert applied_names  # with p=0.8/0.7 something is applied across six variants


def test_image_variants_do_not_depend_on_order_or_chunking():
    """Same pixels and ops for a (seed, id, variant) in any order and alone."""
    params = ImageAugmentParams(variants=2)
    whole = _key(augment_images(IMAGES, params, seed=9))
    reversed_ = _key(augment_images(IMAGES[::-1], params, seed=9))
    singles = {}
    for item in IMAGES[::-1]:
        singles |= _key(augment_images([item], params, seed=9))
    assert reversed_ == whole
    assert singles == whole


def test_image_variants_repeat_across_calls_and_change_with_seed():
    """Calling twice with one seed repeats; another seed differs."""
    params = ImageAugmentParams(variants=1)
    first = _key(augment_images(IMAGES, params, seed=4))
    assert _key(augment_images(IMAGES, params, seed=4)) == first
    other = _key(augment_images(IMAGES, params, seed=40))
    assert [v[1] for v in other.values()] != [v[1] for v in first.values()]


def test_default_transforms_apply_independently():
    """Each transform rolls its own probability: flip without affine and a near-zero no-op rate both occur."""
    items = [(f"r{i}", _png(100 + i, size=16)) for i in range(40)]
    out = augment_images(items, ImageAugmentParams(variants=3), seed=3)
    applied = [{step[0] for step in json.loads(v.op)["applied"]} for v in out]
    flip_without_affine = sum("HorizontalFlip" in a and "Affine" not in a for a in applied)
    nothing = sum(not a for a in applied)
    assert flip_without_affine >= 5  # p = 0.5 * 0.3 = 0.15, about 18 of 120
    assert nothing <= 10  # p = 0.5 * 0.2 * 0.3 = 0.03, about 4 of 120


@pytest.mark.parametrize(
    "transform",
    [
        {"__version__": "2.0.8", "transform": {"__class_fullname__": "NoSuchTransform", "p": 1.0}},
        {"__version__": "2.0.8", "transform": {"__class_fullname__": "Compose", "p": 1.0,
                                               "transforms": [{"__class_fullname__": "HorizontalFlip", "p": "often"}]}},
        {"not_a_transform": True},
    ],
    ids=["unknown-class", "bad-argument", "no-transform-key"],
)
def test_unloadable_transform_raises(transform):
    """A transform dict albumentations cannot load fails before any image is touched (its shape, on load)."""
    with warnings.catch_warnings(), pytest.raises((KeyError, ValueError, TypeError)):
        warnings.simplefilter("ignore")
        augment_images(IMAGES[:1], ImageAugmentParams(transform=transform), seed=0)


@pytest.mark.parametrize("transform, key, expected", [
    ({"__class_fullname__": "HorizontalFlip", "p": 2}, "transforms.1", "less than or equal to 1"),
    ({"__class_fullname__": "HorizontalFlip", "p": 0.5, "prob": 0.5}, "transforms.1", "'prob' are not valid"),
    ({"__class_fullname__": "OneOf", "p": 0.5, "transforms": [{"__class_fullname__": "Blurr", "p": 1}]},
     "transforms.1.transforms.0.__class_fullname__", "unknown albumentations transform 'Blurr'"),
])
def test_a_transform_albumentations_refuses_is_named_by_its_key(transform, key, expected):
    """augment checks the transforms before any work and names the one at fault by its dotted key, in one line."""
    from pipeline.errors import AugmenterUnavailable
    from pipeline.steps.augment import check_available

    tree = {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [{"__class_fullname__": "Affine", "p": 0.5}, transform]}}
    with pytest.raises(AugmenterUnavailable) as info:
        check_available("image", ImageAugmentParams(transform=tree))
    assert str(info.value).startswith(f"augment.image.transform.transform.{key}: ") and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_an_argument_nlpaug_does_not_take_is_named_by_its_key():
    """A misspelt augmenter argument fails augment before any work, naming that augmenter's `args`."""
    from pipeline.errors import AugmenterUnavailable
    from pipeline.params import TextAugmenter
    from pipeline.steps.augment import check_available

    params = TextAugmentParams(augmenters=[TextAugmenter(name="KeyboardAug"), TextAugmenter(name="OcrAug", args={"aug_chr_p": 0.1})])
    with pytest.raises(AugmenterUnavailable, match=r"^augment\.text\.augmenters\.1\.args: nlpaug cannot make OcrAug: .*'aug_chr_p'"):
        check_available("text", params)


# --- per-class targets and unavailable augmenters -------------------------------------------

def test_targets_spread_variants_evenly_to_reach_each_class_target():
    from pipeline.params import TextAugmentParams
    from pipeline.steps.augment import variant_counts

    train = text_records([("a", f"a{i}") for i in range(10)] + [("b", f"b{i}") for i in range(4)])
    counts = variant_counts(train, TextAugmentParams(targets={"b": 11, "a": 5}), seed=1)
    assert counts[train["label"] == "a"].sum() == 0  # already above its target
    b = counts[train["label"] == "b"]
    assert b.sum() == 7 and set(b) == {1, 2}  # 7 variants over 4 records: 2, 2, 2, 1
    reordered = train.iloc[::-1]
    assert variant_counts(reordered, TextAugmentParams(targets={"b": 11}), seed=1).sort_index().equals(
        variant_counts(train, TextAugmentParams(targets={"b": 11}), seed=1).sort_index())


@pytest.mark.parametrize("pieces", [1, 3, 7])
def test_a_plan_from_partitions_gives_each_record_what_the_whole_set_gives_it(pieces):
    """Class counts and the cutoffs found from each partition's bucket counts are all the plan needs."""
    from pipeline.params import TextAugmentParams
    from pipeline.steps import order
    from pipeline.steps.augment import extra_variants, partition_counts, shortfalls, variant_counts, variant_plan

    train = text_records([("a", f"a{i}") for i in range(13)] + [("b", f"b{i}") for i in range(5)] + [("c", "c0")])
    params = TextAugmentParams(targets={"a": 20, "b": 12, "c": 4})
    whole = variant_counts(train, params, seed=3)
    parts = [train.iloc[i::pieces] for i in range(pieces)]
    class_counts = train["label"].value_counts().to_dict()
    extras = extra_variants(shortfalls(class_counts, params.targets))
    counted = pd.concat([order.bucket_counts(p, labels=frozenset(extras), seed=3, namespace="augment-order") for p in parts])
    ranks = order.rank_buckets(counted.groupby(["label", "bucket"])["n"].sum().reset_index(), extras)
    buckets = {label: bucket for label, (bucket, _) in ranks.items()}
    rows = pd.concat([order.in_buckets(p, buckets=buckets, seed=3, namespace="augment-order") for p in parts])
    plan = variant_plan(class_counts, order.cutoffs_in(rows, ranks), params)
    assert pd.concat([partition_counts(p, plan, 3) for p in parts]).sort_index().equals(whole.sort_index())
    assert whole.groupby(train["label"]).sum().to_dict() == {"a": 7, "b": 7, "c": 3}


def test_without_targets_every_listed_class_gets_variants_per_record():
    from pipeline.params import TextAugmentParams
    from pipeline.steps.augment import variant_counts

    train = text_records([("a", "x"), ("b", "y"), ("b", "z")])
    assert variant_counts(train, TextAugmentParams(variants=2, classes=["b"]), seed=0).tolist() == [0, 2, 2]
    assert variant_counts(train, TextAugmentParams(variants=1), seed=0).tolist() == [1, 1, 1]


def test_synonym_augmenter_without_wordnet_says_what_to_install():
    from pipeline.params import TextAugmenter
    from pipeline.errors import AugmenterUnavailable
    from pipeline.steps.augment import check_augmenters

    try:
        import nltk

        nltk.data.find("corpora/wordnet")
        pytest.skip("WordNet is installed here")
    except (ImportError, LookupError):
        pass
    with pytest.raises(AugmenterUnavailable, match="WordNet"):
        check_augmenters([TextAugmenter(name="SynonymAug")])
    check_augmenters([TextAugmenter(name="KeyboardAug")])  # others need nothing
