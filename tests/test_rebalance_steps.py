"""Unit tests for pipeline.steps.rebalance: class targets, copies with lineage, drops, order independence."""
from __future__ import annotations

import json
from collections import Counter

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
    """The seed decides which records are copied."""
    train = text_records([("a", f"a {i}") for i in range(30)] + [("b", f"b {i}") for i in range(10)])
    params = RebalanceParams(strategy="random_over")
    one = json.dumps(sorted(rebalance(train, params, seed=1).copies["op"]))
    two = json.dumps(sorted(rebalance(train, params, seed=2).copies["op"]))
    assert one != two
