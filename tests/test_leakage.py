"""The leakage certificate: duplicates across the split are found from content alone."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import text_records
from pipeline.params import DedupParams
from pipeline.steps.leakage import certificate, cross_split_pairs, evaluation_side_ids, exact_cross_pairs, method_text

TEXT = "my parcel with the new winter boots never arrived although the tracking says delivered"


def _splits(records: pd.DataFrame, names: list[str]) -> pd.Series:
    return pd.Series(names, index=records.index)


def test_exact_and_near_duplicates_across_splits_are_listed_evaluation_side_first():
    records = text_records([("a", TEXT), ("a", TEXT), ("a", TEXT + " yesterday"), ("b", "refund the double charge please")])
    leaks = cross_split_pairs(records, _splits(records, ["train", "test", "val", "train"]), "text", DedupParams(), seed=1)
    kinds = {(leak.split, leak.other_split, leak.kind) for leak in leaks}
    assert ("test", "train", "exact") in kinds and ("val", "train", "near") in kinds
    assert all(leak.split != "train" for leak in leaks)
    assert evaluation_side_ids(leaks) == {records["id"].iloc[1], records["id"].iloc[2]}


def test_duplicates_within_one_split_are_not_leaks():
    records = text_records([("a", TEXT), ("a", TEXT), ("b", "something else entirely different")])
    assert cross_split_pairs(records, _splits(records, ["train", "train", "test"]), "text", DedupParams(), seed=1) == []


def test_certificate_counts_pairs_by_sides_and_says_how():
    records = text_records([("a", TEXT), ("a", TEXT)])
    leaks = cross_split_pairs(records, _splits(records, ["train", "test"]), "text", DedupParams(), seed=1)
    cert = certificate(leaks, method=method_text("text", DedupParams()), checked={"train": 1, "val": 0, "test": 1})
    assert cert["cross_split_pairs"] == 1 and cert["by_splits"] == {"test-train": 1}
    assert cert["pairs"][0]["kind"] == "exact" and "MinHash" in cert["method"]


def _run_split(tmp_path, source_leakage: str, names: list[str]) -> tuple[int, dict, dict]:
    import json

    from conftest import write_params
    from pipeline.io import write_records
    from pipeline.stages import split

    rows = [("a", TEXT), ("a", TEXT + " yesterday")] + [(("a", "b")[i % 2], f"distinct message number {i} about {i * 7} things") for i in range(20)]
    records = text_records(rows).assign(source_split=names + ["train"] * 20)
    write_records(records, tmp_path / "dedup.parquet")
    datasets = {"t": {"modality": "text", "source": "x.tsv", "format": "tsv", "source_split": "keep", "columns": {"split": "split"}}}
    params = write_params(tmp_path / "params.yaml", datasets, split={"source_leakage": source_leakage})
    code = split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                       "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                       "--metrics", str(tmp_path / "split.json"), "--ledger", str(tmp_path / "ledger.parquet")])
    return code, json.loads((tmp_path / "leakage.json").read_text()), json.loads((tmp_path / "split.json").read_text())


def test_source_split_leak_is_reported_when_kept(tmp_path):
    """With the source's own split kept, a test record near-duplicating train is reported, not fatal."""
    code, cert, metrics = _run_split(tmp_path, "keep", ["train", "test"])
    assert code == 0 and cert["cross_split_pairs"] == 1 and cert["pairs"][0]["kind"] == "near"
    assert metrics["leakage"]["cross_split_pairs"] == 1


def test_source_split_leak_is_dropped_from_the_evaluation_side_when_asked(tmp_path):
    code, cert, metrics = _run_split(tmp_path, "drop", ["train", "test"])
    assert code == 0 and cert["cross_split_pairs"] == 0
    assert metrics["dropped"] == {"duplicate_across_source_split": 1}
    assert metrics["in"] == metrics["out"] + 1


@pytest.mark.parametrize("partition_rows", [100_000, 6])
def test_the_partitioned_certificate_lists_what_the_whole_set_search_finds(tmp_path, partition_rows):
    """Many exact and near copies across a kept source split: the stage's certificate (shuffles,
    partitions of 6) holds exactly the pairs of `cross_split_pairs` on the whole set."""
    import json
    from dataclasses import asdict

    from conftest import write_params
    from pipeline.io import read_records, write_records
    from pipeline.seeding import derive_seed
    from pipeline.stages import split

    gen = np.random.default_rng(4)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(gen.choice(words, 40)) for _ in range(30)]
    rows = [(("a", "b")[i % 2], t) for i, t in enumerate(base)]
    rows += [(("a", "b")[i % 2], t if i % 3 == 0 else t.replace(t.split()[3], "changed", 1)) for i, t in enumerate(base[:18])]
    names = ["train"] * 30 + ["test"] * 18
    records = text_records(rows).assign(source_split=names)
    write_records(records, tmp_path / "dedup.parquet")
    datasets = {"t": {"modality": "text", "source": "x.tsv", "format": "tsv", "source_split": "keep", "columns": {"split": "split"}}}
    params = write_params(tmp_path / "params.yaml", datasets, engine={"partition_rows": partition_rows})
    assert split.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"),
                       "--output", str(tmp_path / "split"), "--leakage", str(tmp_path / "leakage.json"),
                       "--metrics", str(tmp_path / "split.json")]) == 0
    where = {i: s for s in ("train", "val", "test") for i in read_records(tmp_path / "split" / f"{s}.parquet")["id"]}
    want = cross_split_pairs(records, records["id"].map(where), "text", DedupParams(), derive_seed(42, "leakage", bits=32))
    assert len(want) > 10 and {leak.kind for leak in want} == {"exact", "near"}
    assert json.loads((tmp_path / "leakage.json").read_text())["pairs"] == [asdict(leak) for leak in want]


def test_exact_cross_pairs_pairs_every_shared_hash_across_splits_only():
    rows = pd.DataFrame({"key": np.array([1, 2, 3, 4, 5, 6, 7], np.uint64),
                         "split": ["train", "test", "val", "train", "train", "val", "test"],
                         "content_hash": ["h1", "h1", "h1", "h2", "h2", "h3", "h4"]})
    pairs = exact_cross_pairs(rows)
    assert pairs.to_dict("list") == {"a": [1, 1, 2], "b": [2, 3, 3]}  # h2 stays in train, h3 and h4 are alone
    assert exact_cross_pairs(rows[rows["content_hash"] == "h4"]).empty


# --- semantic leaks -------------------------------------------------------------------------

def test_semantic_leaks_name_each_evaluation_record_whose_nearest_train_record_is_close():
    from pipeline.steps.leakage import semantic_leaks

    gen = np.random.default_rng(0)
    train = gen.normal(size=(50, 16))
    close = train[7] + gen.normal(scale=0.05, size=16)  # a paraphrase of train record 7
    far = gen.normal(size=(3, 16))
    ids = np.array([f"t{i:02d}" for i in range(50)] + ["v0", "v1", "x0", "x1"], dtype=object)
    splits = np.array(["train"] * 50 + ["val", "val", "test", "test"], dtype=object)
    vectors = np.vstack([train, close, far])
    found = semantic_leaks(ids, splits, vectors, 0.95)
    assert [(f["split"], f["id"], f["other_id"]) for f in found] == [("val", "v0", "t07")]
    assert 0.95 <= found[0]["cosine"] <= 1.0 and found[0]["cosine"] == round(found[0]["cosine"], 4)
    assert semantic_leaks(ids, splits, vectors * 3.0, 0.95) == found  # cosine: the scale of a vector does not count
    order = np.random.default_rng(1).permutation(len(ids))
    assert semantic_leaks(ids[order], splits[order], vectors[order], 0.95) == found


def test_split_writes_the_semantic_section_and_the_gate_reads_it(tmp_path):
    import json

    from conftest import write_params
    from pipeline.io import features_table, write_records, write_table
    from pipeline.params import GatesParams
    from pipeline.report.gates import evaluate_gates
    from pipeline.stages import split

    records = text_records([(("a", "b")[i % 2], f"distinct message number {i} about {i * 7} things") for i in range(40)])
    write_records(records, tmp_path / "dedup.parquet")
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "x.tsv", "format": "tsv"}})
    args = ["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "dedup.parquet"), "--output", str(tmp_path / "split"),
            "--leakage", str(tmp_path / "leakage.json"), "--metrics", str(tmp_path / "split.json")]
    for vectors, leaking in ((np.eye(40), False), (np.ones((40, 8)), True)):  # all orthogonal; all the same
        write_table(features_table(records, vectors), tmp_path / "embeddings.parquet")
        assert split.main([*args, "--embeddings", str(tmp_path / "embeddings.parquet")]) == 0
        semantic = json.loads((tmp_path / "leakage.json").read_text())["semantic"]
        evaluation = json.loads((tmp_path / "split.json").read_text())["counts"]
        assert semantic["threshold"] == 0.9 and semantic["leaks"] == (evaluation["val"] + evaluation["test"] if leaking else 0)
    first_train = min(records["id"][~records["id"].isin([p["id"] for p in semantic["pairs"]])])
    assert {p["other_id"] for p in semantic["pairs"]} == {first_train} and {p["cosine"] for p in semantic["pairs"]} == {1.0}
    gates = evaluate_gates({}, {}, {"semantic": {"leaks": 2}}, GatesParams(max_semantic_leaks=1))
    assert [(g.name, g.passed) for g in gates if g.name == "max_semantic_leaks"] == [("max_semantic_leaks", False)]
    assert split.main(args) == 0  # without embeddings: no semantic section
    assert "semantic" not in json.loads((tmp_path / "leakage.json").read_text())
