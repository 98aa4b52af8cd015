"""Unit tests for pipeline.steps.rebalance: class targets, copies with lineage, drops, order independence."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from conftest import text_records
from pipeline.params import RebalanceParams
from pipeline.steps.rebalance import class_targets, rebalance


def _train() -> pd.DataFrame:
    """Ten `a` originals; `b` has one original and three augmented variants of it."""
    records = text_records([("a", f"a text {i}") for i in range(10)] + [("b", f"b text {i}") for i in range(4)])
    root = records.loc[10, "id"]
    records.loc[11:, "parent_id"] = root
    records.loc[11:, "op"] = '{"op":"augment"}'
    return records


@pytest.mark.parametrize(
    ("strategy", "ratio", "expected"),
    [
        ("random_over", 1.0, {"a": 10, "b": 10, "c": 10}),
        ("random_over", 0.5, {"a": 10, "b": 5, "c": 5}),
        ("random_under", 1.0, {"a": 3, "b": 3, "c": 3}),
        ("random_under", 0.5, {"a": 6, "b": 4, "c": 3}),
        ("none", 1.0, {"a": 10, "b": 4, "c": 3}),
        ("none", 0.5, {"a": 10, "b": 4, "c": 3}),
    ],
)
def test_class_targets(strategy, ratio, expected):
    """Targets bring smallest/largest to the ratio by raising the small (over) or cutting the large (under)."""
    counts = Counter({"a": 10, "b": 4, "c": 3})
    assert class_targets(counts, RebalanceParams(strategy=strategy, ratio=ratio)) == expected


def test_random_over_equalises_classes_with_new_ids():
    """1:1 oversampling gives equal class counts; copies have fresh unique ids and originals stay."""
    train = _train()
    result = rebalance(train, RebalanceParams(strategy="random_over", ratio=1.0), seed=1)
    assert Counter(result.train["label"]) == {"a": 10, "b": 10}
    assert len(result.copies) == 6
    assert set(train["id"]) <= set(result.train["id"])
    assert result.train["id"].is_unique
    assert not set(result.copies["id"]) & set(train["id"])
    assert result.dropped == []


def test_copies_name_root_parent_and_op():
    """A copy's op says oversample + copy_of; its parent is the original, or the root of a copied variant."""
    train = _train()
    by_id = train.set_index("id")
    result = rebalance(train, RebalanceParams(strategy="random_over"), seed=1)
    copied_variants = 0
    for _, copy in result.copies.iterrows():
        op = json.loads(copy["op"])
        assert op == {"op": "oversample", "copy_of": op["copy_of"]}
        source = by_id.loc[op["copy_of"]]
        root = source["parent_id"] if pd.notna(source["parent_id"]) else op["copy_of"]
        assert copy["parent_id"] == root
        assert copy["label"] == source["label"] and copy["text"] == source["text"]
        copied_variants += pd.notna(source["parent_id"])
    assert copied_variants > 0  # the setup copies augmented records too
    assert set(result.copies["parent_id"]) == {train.loc[10, "id"]}


def test_random_over_partial_ratio():
    """At ratio 0.5 the minority grows to half the majority, no further."""
    train = _train()
    result = rebalance(train, RebalanceParams(strategy="random_over", ratio=0.5), seed=1)
    assert Counter(result.train["label"]) == {"a": 10, "b": 5}


def test_random_under_drops_and_lists_ids():
    """1:1 undersampling removes majority records and lists exactly the removed ids."""
    train = _train()
    result = rebalance(train, RebalanceParams(strategy="random_under", ratio=1.0), seed=1)
    assert Counter(result.train["label"]) == {"a": 4, "b": 4}
    assert len(result.dropped) == 6
    assert set(result.dropped) == set(train["id"]) - set(result.train["id"])
    assert set(train.set_index("id").loc[result.dropped, "label"]) == {"a"}
    assert result.copies.empty


def test_none_strategy_passes_through():
    """strategy none leaves train as it is."""
    train = _train()
    result = rebalance(train, RebalanceParams(strategy="none"), seed=1)
    assert sorted(result.train["id"]) == sorted(train["id"])
    assert result.copies.empty and result.dropped == []


@pytest.mark.parametrize("strategy", ["random_over", "random_under"])
def test_result_identical_when_rows_shuffled(strategy):
    """The resampled train, copies and drops do not depend on input row order."""
    train = _train()
    params = RebalanceParams(strategy=strategy)
    first = rebalance(train, params, seed=7)
    again = rebalance(train.sample(frac=1.0, random_state=5), params, seed=7)
    pd.testing.assert_frame_equal(first.train.reset_index(drop=True), again.train.reset_index(drop=True))
    pd.testing.assert_frame_equal(first.copies, again.copies)
    assert first.dropped == again.dropped


def test_different_seed_picks_other_records():
    """The seed decides which records get the copies that do not divide evenly (17 over 13 records: 4 get two)."""
    train = text_records([("a", f"a {i}") for i in range(30)] + [("b", f"b {i}") for i in range(13)])
    params = RebalanceParams(strategy="random_over")
    one = json.dumps(sorted(rebalance(train, params, seed=1).copies["op"]))
    two = json.dumps(sorted(rebalance(train, params, seed=2).copies["op"]))
    assert one != two


# --- per-class counts, both directions, cleaning samplers -----------------------------------

def test_per_class_counts_over_and_under_sample_in_one_pass():
    from collections import Counter

    from pipeline.params import RebalanceParams
    from pipeline.steps.rebalance import rebalance

    train = text_records([("a", f"a{i}") for i in range(30)] + [("b", f"b{i}") for i in range(6)] + [("c", f"c{i}") for i in range(10)])
    result = rebalance(train, RebalanceParams(strategy="random_both", counts={"a": 12, "b": 12}), seed=0)
    assert Counter(result.train["label"]) == {"a": 12, "b": 12, "c": 10}
    assert len(result.dropped) == 18 and len(result.copies) == 6
    assert set(result.copies["parent_id"]) <= set(train["id"])


def test_counts_only_apply_to_random_strategies():
    from pipeline.params import RebalanceParams

    with pytest.raises(ValueError, match="counts"):
        RebalanceParams(strategy="tomek_links", counts={"a": 3})


@pytest.mark.parametrize("strategy", ["tomek_links", "edited_nearest_neighbours"])
def test_cleaning_samplers_drop_majority_records_in_the_minority_region(strategy):
    import numpy as np

    from pipeline.params import RebalanceParams
    from pipeline.steps.rebalance import rebalance

    rng = np.random.default_rng(0)
    majority, minority = rng.normal(0, 1, (60, 2)), rng.normal(2.5, 0.5, (12, 2))
    intruders = rng.normal(2.5, 0.3, (4, 2))  # majority records sitting among the minority
    train = text_records([("maj", f"m{i}") for i in range(64)] + [("min", f"n{i}") for i in range(12)])
    vectors = np.vstack([majority, intruders, minority])
    order = np.argsort(train["id"].to_numpy())  # rebalance expects embeddings in id order
    result = rebalance(train, RebalanceParams(strategy=strategy), seed=0, embeddings=vectors[order])
    dropped = set(result.dropped)
    assert dropped and dropped <= set(train.loc[train["label"] == "maj", "id"])
    assert set(result.fates.of("dropped")["reason"]) == {strategy} and len(result.train) == 76 - len(dropped)


@pytest.mark.slow
def test_embeddings_from_the_offline_models_are_deterministic_and_feed_the_cleaners():
    """Real MiniLM embeddings: same texts, same vectors; ENN on them drops only majority records."""
    import numpy as np

    from pipeline.model.models import feature_extractor
    from pipeline.params import FinetuneParams, RebalanceParams
    from pipeline.steps.rebalance import rebalance

    texts = [f"my parcel {i} never arrived" for i in range(20)] + [f"refund the charge on invoice {i}" for i in range(6)]
    texts += ["refund my parcel charge"]  # a shipping-labelled text that reads like billing
    train = text_records([("ship", t) for t in texts[:20]] + [("bill", t) for t in texts[20:26]] + [("ship", texts[26])])
    ordered = train.sort_values("id")
    first, second = (feature_extractor(FinetuneParams(), "text", ["bill", "ship"], seed=0).features(ordered).numpy()
                     for _ in range(2))
    assert first.shape == (27, 384) and np.array_equal(first, second)
    result = rebalance(train, RebalanceParams(strategy="edited_nearest_neighbours"), seed=0, embeddings=first)
    assert set(result.dropped) <= set(train.loc[train["label"] == "ship", "id"])


def test_augment_over_spreads_the_missing_records_over_originals_only():
    from pipeline.params import RebalanceParams
    from pipeline.steps import order
    from pipeline.steps.augment import extra_variants, partition_counts
    from pipeline.steps.rebalance import ORDER, augment_plan, augment_shortfalls

    train = text_records([("a", f"a{i}") for i in range(10)] + [("b", f"b{i}") for i in range(3)] + [("b", "variant")])
    train.loc[train["text"] == "variant", "parent_id"] = train["id"].iloc[10]  # an augmented record of class b
    originals = train[train["parent_id"].isna()]
    short = augment_shortfalls({"a": 10, "b": 4}, originals["label"].value_counts().to_dict(), RebalanceParams(strategy="augment_over"))
    assert short == {"b": (2, 0)}  # 6 missing over b's 3 originals
    plan = augment_plan(short, order.cutoffs(originals, extra_variants(short), 0, ORDER))
    counts = partition_counts(train, plan, seed=0)
    assert counts[train["label"] == "a"].sum() == 0 and counts[train["text"] == "variant"].sum() == 0
    assert counts[train["label"] == "b"].sum() == 6 and set(counts[(train["label"] == "b") & train["parent_id"].isna()]) == {2}


def test_random_over_copies_each_record_evenly_and_the_rest_to_the_first_in_the_seed_order():
    """7 copies over 3 records: each gets 2, and the one first in the seed's order a third."""
    from pipeline.steps import order
    from pipeline.steps.rebalance import ORDER

    train = text_records([("a", f"a{i}") for i in range(10)] + [("b", f"b{i}") for i in range(3)])
    result = rebalance(train, RebalanceParams(strategy="random_over"), seed=4)
    copied = Counter(json.loads(op)["copy_of"] for op in result.copies["op"])
    b = train[train["label"] == "b"]
    first = b["id"].iloc[int(order.order_keys(b["id"], 4, ORDER).argmin())]
    assert copied == {i: 3 if i == first else 2 for i in b["id"]}


@pytest.mark.parametrize("pieces", [2, 5])
def test_resampling_partitions_gives_each_record_the_fate_the_whole_set_gives_it(pieces):
    """Plan from class counts and cutoffs, then each partition alone: the same records, copies and drops."""
    from pipeline.steps import order
    from pipeline.steps.rebalance import ORDER, resample, resample_plan, resample_ranks

    train = text_records([("a", f"a{i}") for i in range(30)] + [("b", f"b{i}") for i in range(7)] + [("c", f"c{i}") for i in range(12)])
    params = RebalanceParams(strategy="random_both", counts={"a": 12, "b": 16})
    whole = rebalance(train, params, seed=9)
    counts = train["label"].value_counts().to_dict()
    ranks, copies = resample_ranks(counts, params)
    plan = resample_plan(ranks, copies, order.cutoffs(train, ranks, 9, ORDER))
    done = [resample(train.iloc[i::pieces], plan=plan, seed=9) for i in range(pieces)]
    records = pd.concat([d.records for d in done]).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(records, whole.train.sort_values("id").reset_index(drop=True))
    assert sorted(i for d in done for i in d.fates.of("dropped")["id"]) == sorted(whole.dropped)
    assert Counter(records["label"]) == {"a": 12, "b": 16, "c": 12}


def test_smote_adds_interpolated_minority_vectors_and_keeps_the_originals():
    from pipeline.model.smote import smote_features

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (40, 4)), rng.normal(5, 1, (8, 4)), rng.normal(-5, 1, (1, 4))]).astype(np.float32)
    y = np.array([0] * 40 + [1] * 8 + [2])
    new_x, new_y = smote_features(x, y, ratio=0.5, neighbors=5, seed=7)
    assert np.array_equal(new_x[: len(x)], x) and np.array_equal(new_y[: len(y)], y)  # originals first, unchanged
    assert np.bincount(new_y).tolist() == [40, 20, 1]  # class 1 up to 0.5 x 40; a single point cannot be interpolated
    made = new_x[len(x):]
    minority = x[y == 1]
    assert (made >= minority.min(axis=0) - 1e-6).all() and (made <= minority.max(axis=0) + 1e-6).all()
    again, _ = smote_features(x, y, ratio=0.5, neighbors=5, seed=7)
    other, _ = smote_features(x, y, ratio=0.5, neighbors=5, seed=8)
    assert np.array_equal(again, new_x) and not np.array_equal(other, new_x)
