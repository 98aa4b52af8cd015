"""Everything a stage writes, written atomically, and the record sets and features it reads.

A record set is a directory (named like `train.parquet`) of `part-NNNNN.parquet` shards. Rows
are sorted by id before writing, so the bytes do not depend on the order work was done in. Every
write goes to a temporary name beside its target and is renamed over it, so a reader (or a rerun
after a crash) sees the previous output or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageError
from pipeline.records import SCHEMA, to_table

SHARD_ROWS = 200_000
SHARD_BYTES = 128 * 1024 * 1024


def write_records(frame: pd.DataFrame, path: str | Path) -> list[Path]:
    """Write `frame` as a sorted, sharded record set at directory `path`, replacing it atomically."""
    table = to_table(frame.sort_values("id", kind="stable"))
    return _write_shards(table, Path(path))


def read_records(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a record set directory (or a single Parquet file) into a DataFrame with the schema."""
    path = Path(path)
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no record set at {path}")
    tables = [pq.read_table(f, columns=columns, schema=SCHEMA if columns is None else None) for f in files]
    return pa.concat_tables(tables).to_pandas() if tables else SCHEMA.empty_table().to_pandas()


def _write_shards(table: pa.Table, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        written = [_write_part(tmp, i, part) for i, part in enumerate(_shards(table))]
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [path / p.name for p in written]


def _write_part(folder: Path, index: int, table: pa.Table) -> Path:
    target = folder / f"part-{index:05d}.parquet"
    pq.write_table(table, target, compression="zstd", row_group_size=16_384)
    return target


def _shards(table: pa.Table) -> Iterator[pa.Table]:
    """Slices of at most SHARD_ROWS rows and roughly SHARD_BYTES bytes; always at least one."""
    if table.num_rows == 0:
        yield table
        return
    bytes_per_row = max(1, table.nbytes // table.num_rows)
    step = max(1, min(SHARD_ROWS, SHARD_BYTES // bytes_per_row))
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


def _replace(tmp: Path, path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)


def json_bytes(data: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, UTF-8, trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_json(data: Any, path: str | Path) -> None:
    """Write canonical JSON atomically."""
    write_bytes(json_bytes(data), path)


def write_bytes(data: bytes, path: str | Path) -> None:
    """Write one file atomically (a report, a preview)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_folder(files: Mapping[str, bytes], path: str | Path) -> None:
    """Replace the folder `path` with exactly `files` (name -> bytes), atomically (a model, a preview)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, data in sorted(files.items()):
            (tmp / name).write_bytes(data)
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write a small non-record table (a ledger, predictions) as one Parquet file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table.replace_schema_metadata(None), tmp, compression="zstd")
    os.replace(tmp, path)


def write_features(frame: pd.DataFrame, matrix: np.ndarray, path: str | Path) -> None:
    """Records' ids and labels with one feature vector each (float32), sorted by id, as one Parquet file."""
    order = np.argsort(frame["id"].to_numpy(), kind="stable")
    flat = pa.array(np.ascontiguousarray(matrix[order], dtype=np.float32).reshape(-1))
    write_table(pa.table({
        "id": frame["id"].to_numpy()[order], "label": frame["label"].to_numpy()[order],
        "features": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]),
    }), path)


def read_features(path: str | Path, ids: pd.Series) -> np.ndarray:
    """The feature rows of `ids`, in their order; fails naming the first id without features."""
    table = pq.read_table(path)
    width = table.schema.field("features").type.list_size
    matrix = table.column("features").combine_chunks().flatten().to_numpy().reshape(-1, width)
    row = {key: i for i, key in enumerate(table.column("id").to_pylist())}
    missing = [key for key in ids if key not in row]
    if missing:
        raise StageError(f"{path} has no features for record {missing[0]!r} ({len(missing)} missing): rerun the features stage")
    return matrix[[row[key] for key in ids]]
