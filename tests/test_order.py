"""The seed's order of a class (pipeline.steps.order): the first k found from bucket counts are the
first k of a full sort, whatever the partitions, and on a real engine too."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import text_records
from pipeline.steps import order


def _records() -> pd.DataFrame:
    return text_records([("a", f"a{i}") for i in range(40)] + [("b", f"b{i}") for i in range(9)])


def _first_by_sort(records: pd.DataFrame, label: str, k: int, seed: int) -> set[str]:
    rows = order.ordered(records, frozenset([label]), seed, "test-order").sort_values(["order", "id"])
    return set(rows["id"].iloc[:k])


@pytest.mark.parametrize("bits", [1, 3, 12])  # few buckets: many records share one, and the rank inside it counts
@pytest.mark.parametrize("k", [1, 5, 9, 17, 40, 55])
def test_cutoffs_pick_the_first_k_of_a_full_sort(monkeypatch, bits, k):
    monkeypatch.setattr(order, "BUCKET_BITS", bits)
    records = _records()
    cut = order.cutoffs(records, {"a": k, "b": k}, seed=11, namespace="test-order")
    chosen = records.loc[order.first(records, cut, 11, "test-order"), ["label", "id"]]
    for label, size in (("a", 40), ("b", 9)):
        picked = set(chosen.loc[chosen["label"] == label, "id"])
        assert len(picked) == min(k, size)
        assert picked == _first_by_sort(records, label, k, seed=11)


def test_a_class_that_wants_none_has_no_cutoff_and_nothing_comes_first():
    records = _records()
    cut = order.cutoffs(records, {"a": 0, "b": 3}, seed=1, namespace="test-order")
    assert set(cut) == {"b"}
    assert not order.first(records[records["label"] == "a"], cut, 1, "test-order").any()


def test_the_order_depends_on_the_seed_and_the_id_not_on_the_rows_around_a_record():
    records = _records()
    alone = order.order_keys(records["id"].iloc[[7]], 5, "test-order")
    assert alone[0] == order.order_keys(records["id"], 5, "test-order")[7]
    assert alone[0] != order.order_keys(records["id"].iloc[[7]], 6, "test-order")[0]


@pytest.mark.parametrize("partition_rows", [7, 1000])
def test_the_engine_finds_the_cutoffs_of_the_whole_set_from_partitions(tmp_path, monkeypatch, partition_rows):
    """`first_cutoffs` on a real in-process engine over a record set read in partitions."""
    from pipeline.engines import open_engine
    from pipeline.engines.ranks import first_cutoffs
    from pipeline.io import write_records
    from pipeline.params import EngineParams

    monkeypatch.setattr(order, "BUCKET_BITS", 2)
    records = _records()
    write_records(records, tmp_path / "set")
    wanted = {"a": 23, "b": 4}
    with open_engine(EngineParams(partition_rows=partition_rows), tmp_path, "test") as engine:
        part = engine.read_records(tmp_path / "set", modality="text")
        assert part.partitions == (7 if partition_rows == 7 else 1)
        found = first_cutoffs(engine, part, wanted, seed=2, namespace="test-order")
    assert found == order.cutoffs(records, wanted, seed=2, namespace="test-order")
