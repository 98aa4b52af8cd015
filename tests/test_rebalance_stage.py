"""The rebalance stage on partitions: the same final dataset, card and ledger from one partition or
many, for every strategy, and the card's counts and version from the shards it wrote."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from conftest import text_records, write_params
from pipeline.io import read_records, write_records
from pipeline.stages import rebalance
from pipeline.steps.card import dataset_version

TSV = {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}


def _inputs(root: Path) -> None:
    """An augmented train (a: 41 originals; b: 9 originals and 4 variants; c: 17) and val/test."""
    rows = [("a", f"alpha parcel {i} never came") for i in range(41)] + [("b", f"bravo refund {i} please") for i in range(13)]
    rows += [("c", f"charlie invoice {i} wrong") for i in range(17)] + [("a", f"held out a {i}") for i in range(6)]
    rows += [("b", f"held out b {i}") for i in range(5)]
    records = text_records(rows)
    variants = records.index[50:54]
    records.loc[variants, "parent_id"] = records.loc[41, "id"]
    records.loc[variants, "op"] = '{"op":"augment"}'
    write_records(records.iloc[:71], root / "augment" / "train.parquet")
    write_records(records.iloc[71:76], root / "split" / "val.parquet")
    write_records(records.iloc[76:], root / "split" / "test.parquet")


def _run(root: Path, out: Path, rebalance_params: dict, engine: dict) -> dict[str, str]:
    out.mkdir(parents=True)
    params = write_params(out / "params.yaml", TSV, rebalance=rebalance_params, engine=engine)
    code = rebalance.main(["--dataset", "t", "--params", str(params), "--train", str(root / "augment" / "train.parquet"),
                           "--split", str(root / "split"), "--output", str(out / "final"),
                           "--ledger", str(out / "ledger.parquet"), "--metrics", str(out / "metrics.json")])
    assert code == 0
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "params.yaml")
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


SLOW = pytest.mark.slow  # the fast suite keeps random_both: copies and drops in one run
STRATEGIES = [
    pytest.param({"strategy": "random_over"}, id="random_over", marks=SLOW),
    pytest.param({"strategy": "random_under", "ratio": 0.5}, id="random_under", marks=SLOW),
    pytest.param({"strategy": "random_both", "counts": {"a": 20, "b": 30}}, id="random_both"),
    pytest.param({"strategy": "augment_over", "ratio": 0.8}, id="augment_over", marks=SLOW),
    pytest.param({"strategy": "none"}, id="none", marks=SLOW),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_many_partitions_give_the_bytes_of_one(tmp_path, strategy):
    _inputs(tmp_path)
    whole = _run(tmp_path, tmp_path / "whole", strategy, {"partition_rows": 100_000})
    pieces = _run(tmp_path, tmp_path / "pieces", strategy, {"partition_rows": 6, "workers": 1})
    assert pieces == whole
    metrics = json.loads((tmp_path / "pieces" / "metrics.json").read_text())
    assert metrics["in"] + metrics["generated"] == metrics["out"] + sum(metrics["dropped"].values())


def test_random_both_reaches_each_count_and_the_card_is_that_of_the_final_sets(tmp_path):
    _inputs(tmp_path)
    _run(tmp_path, tmp_path / "out", {"strategy": "random_both", "counts": {"a": 20, "b": 30}}, {"partition_rows": 5})
    final = {name: read_records(tmp_path / "out" / "final" / f"{name}.parquet") for name in ("train", "val", "test")}
    assert Counter(final["train"]["label"]) == {"a": 20, "b": 30, "c": 17}
    card = json.loads((tmp_path / "out" / "final" / "card.json").read_text())
    assert card["version"] == dataset_version(final)
    assert card["records"] == {name: len(frame) for name, frame in final.items()}
    assert card["generated"] == {"train": int(final["train"]["parent_id"].notna().sum()), "val": 0, "test": 0}
    ledger = pd.read_parquet(tmp_path / "out" / "ledger.parquet")
    assert Counter(ledger["reason"]) == {"undersampled": 21, "oversampled": 17}


@pytest.mark.slow
def test_a_cleaning_strategy_drops_the_same_records_from_partitions(tmp_path):
    """edited_nearest_neighbours embeds train whole (real offline MiniLM), then drops by partition."""
    _inputs(tmp_path)
    strategy = {"strategy": "edited_nearest_neighbours"}
    whole = _run(tmp_path, tmp_path / "whole", strategy, {"partition_rows": 100_000})
    assert _run(tmp_path, tmp_path / "pieces", strategy, {"partition_rows": 6}) == whole
