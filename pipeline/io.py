"""Everything a stage writes, written atomically, and the record sets and features it reads.

A record set is a directory (named like `train.parquet`) of `part-NNNNN.parquet` shards. Rows
are sorted by id before writing, so the bytes do not depend on the order work was done in. Every
write goes to a temporary name beside its target and is renamed over it, so a reader (or a rerun
after a crash) sees the previous output or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import StageError, StorageError
from pipeline.records import SCHEMA, conform, to_table

SHARD_ROWS = 200_000
SHARD_BYTES = 128 * 1024 * 1024
MAX_SHARDS = 4096  # shard boundaries are id prefixes of three hex digits
ROW_GROUP = 16_384
SPILL_ROW_GROUP = 8_192
# Why a write can fail that the user can fix, and what to do about it.
UNWRITABLE = {
    errno.ENOSPC: "free some space", errno.EDQUOT: "free some space or raise the quota",
    errno.EFBIG: "a file size limit, ulimit -f, stopped it", errno.EROFS: "write the outputs to a writable file system",
    errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable, or mutable if chattr +i",
}


@dataclass(slots=True, frozen=True)
class Part:
    """Rows [start, stop) of one shard file: a partition of a record set."""

    file: Path
    start: int
    stop: int

    @property
    def label(self) -> str:
        return f"{self.file.parent.name}/{self.file.name} rows {self.start}-{self.stop - 1}"


# --- record sets: the layout ----------------------------------------------------------------

def shard_count(rows: int, payload: int) -> int:
    """Shards of a record set: the smallest power of two that keeps each under SHARD_ROWS records
    and SHARD_BYTES of content on average (ids are uniform hashes, so shards come out even)."""
    needed = max(1, -(-rows // SHARD_ROWS), -(-payload // SHARD_BYTES))
    return min(MAX_SHARDS, 1 << (needed - 1).bit_length())


def shard_ranges(count: int) -> list[tuple[str | None, str | None]]:
    """Id range [lo, hi) of each of `count` shards, as hex prefixes (None: unbounded)."""
    bounds = [f"{k * MAX_SHARDS // count:03x}" for k in range(1, count)]
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def payload_bytes(table: pa.Table) -> int:
    """Bytes of a table's values, counted row by row (so any split of the rows sums to the same)."""
    total = 0
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type):
            total += int(pc.sum(pc.binary_length(column)).as_py() or 0)
        else:
            total += column.type.bit_width // 8 * len(column)
    return total


def write_records(frame: pd.DataFrame, path: str | Path) -> int:
    """Write `frame` as a record set at directory `path` in the canonical layout, atomically; return its rows.

    Rows are sorted by id and the id space is cut into `shard_count` equal prefix ranges, one shard
    each: the layout is a function of the records alone, whoever wrote them in whatever pieces.
    """
    table = sorted_records(to_table(frame))
    with replacing_folder(Path(path)) as tmp:
        for index, (lo, hi) in enumerate(shard_ranges(shard_count(table.num_rows, payload_bytes(table)))):
            write_shard(_id_range(table, lo, hi), tmp / shard_name(index))
    return table.num_rows


def read_records(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a record set directory (or a single Parquet file) into a DataFrame with the schema."""
    tables = [pq.read_table(f, columns=columns, schema=SCHEMA if columns is None else None) for f in _record_files(Path(path))]
    return pa.concat_tables(tables).to_pandas() if tables else SCHEMA.empty_table().to_pandas()


def sorted_records(table: pa.Table) -> pa.Table:
    """The records in id order, in one chunk with exactly the schema (what a shard holds)."""
    table = pa.Table.from_arrays(table.combine_chunks().columns, schema=SCHEMA)
    _check_ids(table)
    return table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))


def _check_ids(table: pa.Table) -> None:
    """Shards are id prefix ranges: an id that is not `records.make_id`'s is a bug upstream."""
    bad = pc.invert(pc.match_substring_regex(table.column("id"), "^[0-9a-f]{16}$"))
    if table.num_rows and pc.any(bad).as_py():
        example = table.column("id").filter(bad)[0].as_py()
        raise ValueError(f"record id {example!r} is not 16 lowercase hex digits (records.make_id)")


def write_shard(table: pa.Table, target: Path) -> None:
    """One shard file: the same options, so the same records give the same bytes."""
    pq.write_table(table.combine_chunks(), target, compression="zstd", row_group_size=ROW_GROUP)


def _id_range(table: pa.Table, lo: str | None, hi: str | None) -> pa.Table:
    ids = table.column("id")
    keep = pc.and_(pc.greater_equal(ids, lo) if lo else pa.scalar(True), pc.less(ids, hi) if hi else pa.scalar(True))
    return table.filter(keep) if lo or hi else table


def _record_files(path: Path) -> list[Path]:
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no record set at {path}")
    return files


# --- record sets: partitions and spills -----------------------------------------------------

def record_partitions(path: Path, rows: int) -> list[Part]:
    """The record set at `path` as partitions of at most `rows` consecutive rows of one shard."""
    parts = []
    for file in _record_files(Path(path).resolve()):
        total = pq.read_metadata(file).num_rows
        parts.extend(Part(file, start, min(start + rows, total)) for start in range(0, max(total, 1), rows))
    return parts


def record_chunks(path: Path, columns: list[str] | None = None, rows: int = 100_000) -> Iterator[pd.DataFrame]:
    """The record set at `path` read in order (by id), at most `rows` records at a time."""
    for part in record_partitions(Path(path), rows):
        yield read_part(part, columns)


def record_count(path: Path) -> int:
    """Records in the record set at `path`, from its shards' footers."""
    return sum(pq.read_metadata(file).num_rows for file in _record_files(Path(path)))


def read_part(part: Part, columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of one partition, with the record schema's types."""
    file = pq.ParquetFile(part.file)
    groups, first, seen = [], None, 0
    for index in range(file.num_row_groups):
        size = file.metadata.row_group(index).num_rows
        if seen + size > part.start and seen < part.stop:
            groups.append(index)
            first = seen if first is None else first
        seen += size
    if not groups:
        return empty_records(columns)
    table = file.read_row_groups(groups, columns=columns)
    return table.slice(part.start - first, part.stop - part.start).to_pandas()


def empty_records(columns: list[str] | None = None) -> pd.DataFrame:
    """No records, with the schema's columns (or some of them) and types."""
    frame = SCHEMA.empty_table().to_pandas()
    return frame[list(columns)] if columns else frame


def write_spill(frame: pd.DataFrame, path: Path, *, schema: pa.Schema = SCHEMA, sort: bool = True) -> Path:
    """A scratch copy of `frame` that workers can read (sorted by id for a record set), with its size."""
    table = pa.Table.from_pandas(conform(frame) if schema is SCHEMA else frame, schema=schema, preserve_index=False)
    if sort:
        table = table.take(pc.sort_indices(table, sort_keys=[("id", "ascending")]))
    table = table.replace_schema_metadata({"payload": str(payload_bytes(table))})
    with writing(path):
        pq.write_table(table, path, compression="lz4", row_group_size=SPILL_ROW_GROUP)
    return path


def write_table_spill(frame: pd.DataFrame, path: Path, schema: pa.Schema) -> Path:
    """A scratch copy of any table (signatures, pairs, edges) with the given types."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)
    with writing(path):
        pq.write_table(table, path, compression="lz4", row_group_size=SPILL_ROW_GROUP)
    return path


def read_spill(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=columns).replace_schema_metadata(None).to_pandas()


def spill_size(path: Path) -> tuple[int, int]:
    """(rows, payload bytes) of a spill file, from its footer."""
    meta = pq.read_metadata(path)
    return meta.num_rows, int(meta.metadata[b"payload"])


def assemble_shard(spills: list[Path], lo: str | None, hi: str | None, target: Path) -> int:
    """Shard [lo, hi) of a record set from the sorted spills of its pieces; returns its rows."""
    filters = [f for f in (("id", ">=", lo) if lo else None, ("id", "<", hi) if hi else None) if f]
    tables = [pq.read_table(s, filters=filters or None, schema=SCHEMA) for s in spills]
    table = sorted_records(pa.concat_tables(tables) if tables else SCHEMA.empty_table())
    write_shard(table, target)
    return table.num_rows


@contextlib.contextmanager
def scratch_folder(beside: Path, stage: str) -> Iterator[Path]:
    """A scratch folder for one run of `stage`, made in `beside` (the folder of its outputs, on the
    filesystem they are on), removed afterwards, with any an earlier run of the stage left when it
    was killed."""
    beside = Path(beside).resolve()
    with writing(beside):
        beside.mkdir(parents=True, exist_ok=True)
        for stale in beside.glob(f".{stage}-scratch-*"):
            shutil.rmtree(stale, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{stage}-scratch-", dir=beside))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def replacing_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside `path` that replaces it, atomically, when the block succeeds. The
    temporary folders a killed run left beside `path` go first (they may hold a whole record set).
    A write in the block that fails for want of space or permission names `path`."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            yield tmp
            _replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@contextlib.contextmanager
def writing(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """A write of `path` (through the temporary file `tmp`, removed if the write fails). A failure
    for want of space, size or permission becomes a StorageError naming `path`, one line for the
    user: Arrow's errors name no file at all."""
    try:
        yield
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
            raise StorageError(f"cannot write {path}: {os.strerror(exc.errno)} ({UNWRITABLE[exc.errno]})") from exc
        raise


def _replace(tmp: Path, path: Path) -> None:
    """Rename `tmp` to `path`. An old folder is renamed aside (under a hidden name) first and removed
    after, so a process killed at any moment leaves the old folder whole, the new one, or neither:
    never an old folder with part of its files removed."""
    old = None
    if path.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        os.replace(path, old / path.name)
    elif path.exists():
        path.unlink()
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def json_bytes(data: Any) -> bytes:
    """Canonical JSON: sorted keys, two-space indent, UTF-8, trailing newline."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_json(data: Any, path: str | Path) -> None:
    """Write canonical JSON atomically."""
    write_bytes(json_bytes(data), path)


def write_bytes(data: bytes, path: str | Path) -> None:
    """Write one file atomically (a report, a preview)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_folder(files: Mapping[str, bytes], path: str | Path) -> None:
    """Replace the folder `path` with exactly `files` (name -> bytes), atomically (a model, a preview)."""
    with replacing_folder(Path(path)) as tmp:
        for name, data in sorted(files.items()):
            (tmp / name).write_bytes(data)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write a small non-record table (a ledger, predictions) as one Parquet file, atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.replace_schema_metadata(None), tmp, compression="zstd")
        os.replace(tmp, path)


def features_table(frame: pd.DataFrame, matrix: np.ndarray) -> pa.Table:
    """Records' ids and labels with one feature vector each (float32), sorted by id."""
    order = np.argsort(frame["id"].to_numpy(), kind="stable")
    flat = pa.array(np.ascontiguousarray(matrix[order], dtype=np.float32).reshape(-1))
    return pa.table({
        "id": frame["id"].to_numpy()[order], "label": frame["label"].to_numpy()[order],
        "features": pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]),
    })


def write_table_chunks(tables: Iterable[pa.Table], path: str | Path) -> int:
    """Write tables of one schema, in order, as the row groups of one Parquet file, atomically (a
    table too large to hold whole); return its rows. No table: no file is written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        writer, rows = None, 0
        try:
            for table in tables:
                table = table.replace_schema_metadata(None)
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"nothing to write at {path}")
        os.replace(tmp, path)
    return rows


def features_width(path: str | Path) -> int:
    """The length of the feature vectors in a features file (from its schema)."""
    return pq.read_schema(path).field("features").type.list_size


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
