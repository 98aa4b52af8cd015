"""Semantic neighbours: exact pair search on the embeddings, and the semantic stage that keeps
neighbours on one side of the split (action group) or merges them (action merge).

Vectors are made here (random directions, with planted neighbours at known cosines), so each
expected pair is known; the stage runs on a real record set under the local engine in small
partitions, and under a Dask LocalCluster for the same bytes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import text_records, write_params

from pipeline.io import features_table, read_records, write_records, write_table
from pipeline.stages import semantic as stage
from pipeline.steps import semantic


def vectors_with_neighbours(n: int = 60, width: int = 32, seed: int = 3) -> tuple[np.ndarray, dict[tuple[int, int], float]]:
    """`n` random directions; rows 1, 11, 12 and 21 moved next to rows 0, 10, 11 and 20. The planted
    pairs (rows) and their cosines."""
    gen = np.random.default_rng(seed)
    vectors = gen.normal(size=(n, width))
    for near, of, mix in ((1, 0, 0.2), (11, 10, 0.3), (12, 11, 0.3), (21, 20, 0.25)):
        vectors[near] = vectors[of] / np.linalg.norm(vectors[of]) + mix * gen.normal(size=width) / np.sqrt(width)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    planted = {(i, j): float(cosines[i, j]) for i in range(n) for j in range(i + 1, n) if cosines[i, j] >= 0.9}
    return vectors.astype(np.float32), planted


def brute_force(ids: np.ndarray, vectors: np.ndarray, threshold: float) -> set[tuple[str, str]]:
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    cosine = np.round(unit @ unit.T, 4)
    return {tuple(sorted((ids[i], ids[j]))) for i in range(len(ids)) for j in range(i + 1, len(ids)) if cosine[i, j] >= threshold}


def test_pairs_are_every_pair_at_the_threshold_whatever_the_order_and_the_blocks(monkeypatch):
    vectors, planted = vectors_with_neighbours()
    assert {(0, 1), (10, 11), (11, 12), (20, 21)} <= set(planted)
    ids = np.array([f"{i:016x}" for i in range(len(vectors))], dtype=object)
    found = semantic.neighbour_pairs(ids, vectors, 0.9)
    assert set(zip(found["a"], found["b"])) == brute_force(ids, vectors, 0.9) and len(found) == len(planted)
    assert (found["a"] < found["b"]).all() and found["cosine"].between(0.9, 1.0).all()
    shuffled = np.random.default_rng(0).permutation(len(ids))
    monkeypatch.setattr(semantic, "ROWS", 7)
    monkeypatch.setattr(semantic, "COLUMNS", 5)
    again = semantic.neighbour_pairs(ids[shuffled], vectors[shuffled], 0.9)
    pd.testing.assert_frame_equal(again, found)


def test_a_threshold_above_every_pair_finds_none():
    vectors, planted = vectors_with_neighbours()
    ids = np.array([f"{i:016x}" for i in range(len(vectors))], dtype=object)
    above = round(max(planted.values()), 4) + 0.0001
    assert semantic.neighbour_pairs(ids, vectors, above).empty


def test_joined_groups_take_the_smallest_group_id_of_a_chain():
    records = pd.DataFrame({"id": ["a", "b", "c", "d", "e"], "group_id": ["g3", "g1", "g3", "g2", "e"]})
    pairs = pd.DataFrame({"a": ["a", "b"], "b": ["d", "d"], "cosine": [0.95, 0.92]})  # g3 - g2 - g1
    joined = semantic.joined_groups(records, pairs)
    assert joined.to_dict("list") == {"id": ["a", "c", "d"], "group_id": ["g1", "g1", "g1"]}
    assert semantic.joined_groups(records, pairs.iloc[0:0]).empty


def test_pairs_after_a_merge_are_seen_from_the_survivors():
    pairs = pd.DataFrame({"a": ["a", "a", "b", "c"], "b": ["b", "c", "d", "e"], "cosine": [0.99, 0.91, 0.93, 0.9]})
    moved = semantic.surviving_pairs(pairs, into={"b": "a", "c": "a"}, gone={"b", "c", "e"})
    assert moved.to_dict("list") == {"a": ["a"], "b": ["d"], "cosine": [0.93]}


def write_inputs(root: Path) -> tuple[pd.DataFrame, dict]:
    """A record set of 60 texts (of the planted neighbours, only rows 20 and 21 differ in label) and its embeddings."""
    vectors, planted = vectors_with_neighbours()
    labels = ["shipping" if i == 21 or (i % 3 == 0 and i not in (0, 12)) else "billing" for i in range(len(vectors))]
    rows = [(label, f"ticket number {i} about something") for i, label in enumerate(labels)]
    records = text_records(rows, group_ids=[make if i != 12 else "zz-own-group" for i, make in enumerate(text_records(rows)["id"])])
    write_records(records, root / "dedup.parquet")
    write_table(features_table(records[["id", "label"]], vectors), root / "embeddings.parquet")
    return records, planted


def run_stage(root: Path, engine: dict | None = None, **semantic_params) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    params = write_params(root / "params.yaml", dedup={"semantic": semantic_params}, engine=engine or {"partition_rows": 13})
    assert stage.main(["--dataset", "t", "--params", str(params), "--input", str(root / "dedup.parquet"),
                       "--embeddings", str(root / "embeddings.parquet"), "--output", str(root / "semantic.parquet"),
                       "--pairs", str(root / "pairs.parquet"),
                       "--ledger", str(root / "ledger.parquet"), "--metrics", str(root / "semantic.json")]) == 0
    return (json.loads((root / "semantic.json").read_text()), read_records(root / "semantic.parquet"),
            pd.read_parquet(root / "ledger.parquet"))


def test_group_keeps_every_record_and_joins_the_neighbours_groups(tmp_path):
    records, planted = write_inputs(tmp_path)
    metrics, out, ledger = run_stage(tmp_path)
    ids = records["id"].tolist()
    assert metrics["in"] == metrics["out"] == len(records) and metrics["pairs"] == len(planted)
    group = out.set_index("id")["group_id"]
    assert all(group[ids[i]] == group[ids[j]] for i, j in planted)
    assert group[ids[0]] == min(ids[0], ids[1]) and group[ids[20]] == min(ids[20], ids[21])
    assert group[ids[10]] == group[ids[11]] == group[ids[12]] == min(ids[10], ids[11], "zz-own-group")
    untouched = set(range(len(ids))) - {k for pair in planted for k in pair}
    assert all(group[ids[k]] == ids[k] for k in untouched)
    flagged = ledger.set_index("id")
    assert set(flagged.index) == {ids[k] for pair in planted for k in pair} and (flagged["reason"] == "semantic_neighbour").all()
    assert flagged.loc[ids[1], "detail"] == f"cosine {round(planted[(0, 1)], 4):.4f} with {ids[0]}"
    pairs = pd.read_parquet(tmp_path / "pairs.parquet")
    assert set(zip(pairs["a"], pairs["b"])) == {tuple(sorted((ids[i], ids[j]))) for i, j in planted}
    assert dict(zip(zip(pairs["a"], pairs["b"]), pairs["cosine"])) == {
        tuple(sorted((ids[i], ids[j]))): round(c, 4) for (i, j), c in planted.items()}


def test_merge_keeps_one_record_per_cluster_and_names_its_survivor(tmp_path):
    records, _ = write_inputs(tmp_path)
    metrics, out, ledger = run_stage(tmp_path, action="merge")
    ids = records["id"].tolist()
    merged = ledger[ledger["fate"] == "merged"].set_index("id")
    # clusters {0,1}, {10,11,12} and {20,21}; the first id survives; 20 and 21 disagree on the label, and the
    # majority rule breaks the tie by the smaller label (billing, row 20's)
    assert metrics["clusters"] == 3 and metrics["label_conflicts"] == 1 and metrics["merged"] == 4
    first, chain = min(ids[0], ids[1]), min(ids[10], ids[11], ids[12])
    expected = {i: first for i in (ids[0], ids[1]) if i != first} | {i: chain for i in ids[10:13] if i != chain} | {ids[21]: ids[20]}
    assert dict(merged["into"]) == expected
    assert set(merged["reason"]) == {"semantic_duplicate", "label_conflict_minority"}
    assert set(out["id"]) == set(ids) - set(merged.index) and metrics["out"] == len(records) - 4


def test_a_null_threshold_passes_the_records_on_unchanged(tmp_path):
    write_inputs(tmp_path)
    metrics, out, ledger = run_stage(tmp_path, threshold=None)
    assert metrics["pairs"] == 0 and ledger.empty
    pd.testing.assert_frame_equal(out.sort_values("id").reset_index(drop=True), read_records(tmp_path / "dedup.parquet"))


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_a_dask_cluster_gives_the_bytes_of_the_local_engine(tmp_path):
    outputs = {}
    for name, engine in (("local", {"partition_rows": 100}), ("dask", {"kind": "dask", "partition_rows": 7,
                                                                        "dask": {"workers": 2, "memory_limit": "1GB"}})):
        root = tmp_path / name
        root.mkdir()
        write_inputs(root)
        run_stage(root, engine, action="merge")
        outputs[name] = (digest(root / "semantic.parquet"), (root / "ledger.parquet").read_bytes(), (root / "pairs.parquet").read_bytes())
    assert outputs["dask"] == outputs["local"]
