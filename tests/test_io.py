"""Record sets on disk: the canonical layout, whoever writes it and in how many pieces."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import make_params, text_records
from pipeline import io
from pipeline.engines import open_engine


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize(("rows", "payload", "shards"), [
    (0, 0, 1), (1, 10, 1), (200_000, 1, 1), (200_001, 1, 2), (450_000, 1, 4),
    (10, 129 * 1024 * 1024, 2), (10**12, 1, io.MAX_SHARDS),
])
def test_shard_count_is_the_power_of_two_that_keeps_shards_under_both_limits(rows, payload, shards):
    assert io.shard_count(rows, payload) == shards


def test_shard_ranges_cut_the_id_space_in_equal_prefix_ranges():
    assert io.shard_ranges(1) == [(None, None)]
    assert io.shard_ranges(4) == [(None, "400"), ("400", "800"), ("800", "c00"), ("c00", None)]


def test_a_large_record_set_is_cut_by_id_prefix_the_same_whoever_writes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "SHARD_ROWS", 50)
    records = text_records([("a" if i % 3 else "b", f"text number {i} " * (1 + i % 4)) for i in range(300)])
    io.write_records(records.sample(frac=1, random_state=0), tmp_path / "memory")
    files = sorted((tmp_path / "memory").iterdir())
    assert [f.name for f in files] == [io.shard_name(k) for k in range(8)]  # 300 / 50 -> 6 -> the next power of two
    for (lo, hi), file in zip(io.shard_ranges(8), files, strict=True):
        ids = pq.read_table(file).column("id").to_pylist()
        assert ids == sorted(ids) and all((lo is None or i >= lo) and (hi is None or i < hi) for i in ids)
    assert sum(pq.read_metadata(f).num_rows for f in files) == 300

    params = make_params(engine={"partition_rows": 7})
    with open_engine(params.engine, tmp_path, "probe") as engine:
        spilled = engine.read_records(tmp_path / "memory", modality="text")
        assert spilled.partitions > 8
        assert engine.write_records(spilled, tmp_path / "engine") == 300
    assert digest(tmp_path / "engine") == digest(tmp_path / "memory")
    assert not list(tmp_path.glob(".probe-scratch-*"))  # the engine's spills are gone


def test_record_ids_must_be_hex_for_the_layout(tmp_path):
    records = text_records([("a", "x")]).assign(id="not-hex-at-all")
    with pytest.raises(ValueError, match="16 lowercase hex digits"):
        io.write_records(records, tmp_path / "r")
