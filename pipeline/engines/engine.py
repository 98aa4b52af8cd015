"""The engine: record sets in partitions, steps over them, and canonical writes.

A stage asks the engine to read a record set (or a source) as a `Partitioned` table, to run a step
over every partition (`process`: pandas in, `Processed` out), and to write the result. Partitions
hold at most `engine.partition_rows` records (a thirty-second of that for images), so memory is
bounded by the partition, not the corpus; they never change results, because everything that
reaches an output is put in a canonical order first (records by id, ledger rows by fate, reason
and id) and the shard layout of a record set is a function of its content alone (`pipeline.io`).

`process` materialises what a step returns: each partition's records and fates go to spill files
in the stage's scratch folder (on the shared filesystem when the work runs on a cluster), so a
step runs once per partition however its outputs are used, and a task that is retried (a worker
lost) rewrites its own spills and nothing else.

Shuffles (`group`, `route`) are exchanges of spill files too, not Dask's DataFrame shuffle: each
input partition writes one file with its rows grouped by output partition, and each output reads
its group from every file. Dask's in-process shuffle keeps up to 1 GB in memory (partd's buffer)
and costs about half a millisecond per (input, output) piece, which for P partitions is P² pieces:
the exchange keeps a partition or two in memory and costs under half of that per piece.
"""
from __future__ import annotations

import functools
import logging
import os
import pickle
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
from dask.callbacks import Callback
from tqdm import tqdm

from pipeline import io
from pipeline.engines.session import Session
from pipeline.errors import UserError
from pipeline.ledger import FATES_SCHEMA, Processed
from pipeline.params import DatasetParams, EngineParams
from pipeline.sources import RAW_SCHEMA, source_attrs, source_chunks

log = logging.getLogger(__name__)
IMAGE_PARTITION_DIVISOR = 32  # an image costs tens of times a short text, in memory and in time
PARTITIONS_PER_WORKER = 4  # with fewer, the last partitions leave workers idle while one finishes
MIN_SPLIT_ROWS = 2_000  # texts (images: a thirty-second): below it a partition's fixed cost outweighs its work
Step = Callable[[pd.DataFrame], Processed]


@dataclass(slots=True, frozen=True)
class Partitioned:
    """A table in partitions, read lazily; `labels` name where each partition comes from (for errors)."""

    frame: dd.DataFrame
    labels: tuple[str, ...]
    spills: tuple[Path, ...] = ()  # set when each partition is a spill file sorted by id
    bounds: tuple[int, ...] = ()  # set by `materialize(key=...)`: the smallest key of each partition
    paths: tuple[Path, ...] = ()  # set when each partition is a spill file (any table)

    @property
    def partitions(self) -> int:
        return len(self.labels)


@dataclass(slots=True)
class Engine:
    """Runs a stage's work in partitions on the session's scheduler; spills go to `scratch`."""

    params: EngineParams
    session: Session
    scratch: Path
    stage: str = ""
    _spilled: int = 0
    _exchanges: list[tuple[frozenset, list[Path]]] = field(default_factory=list)

    def partition_rows(self, modality: str, total: int | None = None) -> int:
        """Records per partition: `partition_rows`, or a thirty-second of it for images; and, with
        several workers and `total` records known, small enough that each worker gets a few, though
        not below `MIN_SPLIT_ROWS` (a small set is not worth cutting into pieces)."""
        rows = self._scaled(self.params.partition_rows, modality)
        workers = self.params.workers if self.params.kind == "local" else self.params.dask.workers
        if total is not None and workers > 1:
            per_worker = -(-total // (workers * PARTITIONS_PER_WORKER))
            rows = min(rows, max(self._scaled(MIN_SPLIT_ROWS, modality), per_worker))
        return rows

    @staticmethod
    def _scaled(rows: int, modality: str) -> int:
        return rows if modality == "text" else max(1, rows // IMAGE_PARTITION_DIVISOR)

    # --- reading ----------------------------------------------------------------------------

    def read_records(self, path: Path, *, modality: str, columns: Sequence[str] | None = None) -> Partitioned:
        """The record set at `path`, in partitions of consecutive rows of its shards."""
        parts = io.record_partitions(path, self.partition_rows(modality, io.record_count(path)))
        reader = functools.partial(io.read_part, columns=list(columns) if columns else None)
        frame = dd.from_map(reader, parts, meta=io.empty_records(columns), enforce_metadata=False)
        return Partitioned(frame, tuple(part.label for part in parts))

    def with_bounds(self, records: Partitioned, path: Path, *, modality: str) -> Partitioned:
        """`records` (the record set at `path`, as `read_records` gives it) with the smallest key of each
        partition, so that `route` can bring rows keyed by record id to their record's partition: a
        record set's partitions run through its ids in order (shards are id ranges, sorted by id)."""
        ids = self.read_records(path, modality=modality, columns=["id"])
        firsts = self._compute([dask.delayed(_first_key)(data) for data in ids.frame.to_delayed()])
        return Partitioned(records.frame, records.labels, records.spills, tuple(_running_bounds(firsts)), records.paths)

    def read_source(self, dataset: DatasetParams, root: Path) -> tuple[Partitioned, int, dict[str, str]]:
        """The dataset's source as raw rows in partitions, their count, and what reading found (`encoding`).

        The source is read here, in order, one partition at a time, and each partition is spilled
        for the workers.
        """
        rows = self.partition_rows(dataset.modality)
        paths, labels, found, read = [], [], [], Counter()
        for chunk in source_chunks(dataset, root, rows=rows):
            paths.append(io.write_spill(chunk, self._spill_path("source"), schema=RAW_SCHEMA, sort=False))
            file = chunk.attrs["file"]
            labels.append(f"{file} rows {read[file] + 1}-{read[file] + len(chunk)}")
            read[file] += len(chunk)
            found.append(dict(chunk.attrs))
        meta = RAW_SCHEMA.empty_table().to_pandas()
        return self._spill_reader(paths, tuple(labels), meta=meta), sum(read.values()), source_attrs(found)

    def from_frame(self, frame: pd.DataFrame, schema: pa.Schema) -> Partitioned:
        """A table this process holds, as one partition the workers can read."""
        path = io.write_table_spill(frame, self._spill_path("table"), schema)
        return self._spill_reader([path], ("in memory",), meta=schema.empty_table().to_pandas())

    # --- work -------------------------------------------------------------------------------

    def process(self, part: Partitioned, step: Step, *,
                schema: pa.Schema | None = None) -> tuple[Partitioned, list[Path], Counter[str]]:
        """Run `step` on every partition now: what it passes on (records, spilled sorted by id; or
        any table of `schema`), its fates' spill files, and the sum of its counts."""
        records = [self._spill_path("records") for _ in range(part.partitions)]
        fates = [self._spill_path("fates") for _ in range(part.partitions)]
        tasks = [dask.delayed(_run_step, pure=False)(data, step, label, out, ledger, schema)
                 for data, label, out, ledger in zip(part.frame.to_delayed(), part.labels, records, fates, strict=True)]
        counts = sum((Counter(c) for c in self._compute(tasks)), Counter())
        if schema is not None:
            return self._spill_reader(records, part.labels, meta=schema.empty_table().to_pandas()), fates, counts
        return self._spill_reader(records, part.labels, meta=io.empty_records(), sorted_by_id=True), fates, counts

    def read_fates(self, paths: Sequence[Path]) -> Partitioned:
        """Fates spilled by `process`, as a table."""
        return self._spill_reader(list(paths), tuple(p.name for p in paths), meta=FATES_SCHEMA.empty_table().to_pandas())

    def map(self, part: Partitioned, fn: Callable[..., pd.DataFrame], *, meta: pd.DataFrame, **shared: object) -> Partitioned:
        """`fn(partition, **shared)` over every partition, lazily (pandas in, pandas out). Each `shared`
        value (a plan, a lookup table) is sent to a worker once, not with every partition."""
        once = {name: dask.delayed(value, pure=True) for name, value in shared.items()}
        return Partitioned(part.frame.map_partitions(fn, meta=meta, align_dataframes=False, **once), part.labels)

    def materialize(self, part: Partitioned, *, schema: pa.Schema, key: str | None = None) -> Partitioned:
        """Spill every partition now, each sorted by `key` if given, with its smallest key kept in
        `bounds` (so that `route` can send rows to the partition whose key range holds them)."""
        paths = [self._spill_path("table") for _ in range(part.partitions)]
        tasks = [dask.delayed(_spill_table)(data, path, schema, key) for data, path in zip(part.frame.to_delayed(), paths, strict=True)]
        firsts = self._compute(tasks)
        reader = self._spill_reader(paths, part.labels, meta=schema.empty_table().to_pandas())
        bounds = tuple(_running_bounds(firsts)) if key else ()
        return Partitioned(reader.frame, part.labels, bounds=bounds, paths=tuple(paths))

    def columns(self, part: Partitioned, columns: Sequence[str]) -> Partitioned:
        """Some columns of a materialized table, read alone (its partitions and bounds stay)."""
        if not part.paths:
            raise ValueError("columns needs a materialized table")
        reader = functools.partial(io.read_spill, columns=list(columns))
        meta = part.frame._meta[list(columns)]
        frame = dd.from_map(reader, list(part.paths), meta=meta, enforce_metadata=False)
        return Partitioned(frame, part.labels, bounds=part.bounds, paths=part.paths)

    def group(self, part: Partitioned, by: Sequence[str], fn: Callable[[pd.DataFrame], pd.DataFrame] | None = None, *,
              order: Sequence[str], meta: pd.DataFrame) -> Partitioned:
        """`fn` (or nothing) over partitions in which rows with equal `by` values are together (a
        shuffle), each sorted by `order` first: the order a shuffle delivers rows in is not
        canonical, `order` must be."""
        shuffled = self._exchange(part.frame, functools.partial(_hashed, by=list(by)), max(part.partitions, 1))
        return Partitioned(shuffled.map_partitions(_sorted_call, fn, list(order), meta=meta), part.labels)

    def route(self, part: Partitioned, key: str, onto: Partitioned) -> Partitioned:
        """`part`'s rows moved to the partition of `onto` (materialized with a key) whose key range holds
        their `key`: partition i of the result lines up with partition i of `onto` (see `zip`)."""
        if not onto.bounds:
            raise ValueError("route needs a target materialized with a key")
        bounds = np.asarray(onto.bounds, dtype=np.uint64)
        moved = self._exchange(part.frame, functools.partial(_in_range, key=key, bounds=bounds), len(bounds))
        return Partitioned(moved, onto.labels)

    def zip(self, fn: Callable[..., pd.DataFrame], *parts: Partitioned, meta: pd.DataFrame) -> Partitioned:
        """`fn(a_i, b_i, ...)` over the i-th partitions of `parts`, which must line up (`route`)."""
        frames = [p.frame for p in parts]
        return Partitioned(dd.map_partitions(_reset_call, fn, *frames, meta=meta, align_dataframes=False), parts[0].labels)

    def concat(self, parts: Sequence[Partitioned]) -> Partitioned:
        """The partitions of `parts`, one after another."""
        return Partitioned(dd.concat([p.frame for p in parts]), tuple(label for p in parts for label in p.labels))

    def count(self, part: Partitioned) -> int:
        """Rows of the table."""
        return int(self._compute([part.frame.map_partitions(len).sum()])[0])

    def value_counts(self, part: Partitioned, column: str) -> dict[str, int]:
        """How many rows hold each value of `column`, sorted by value."""
        counts = self._compute([part.frame[column].value_counts()])[0]
        return {str(k): int(v) for k, v in sorted(counts.items())}

    def totals(self, part: Partitioned, by: Sequence[str], column: str) -> pd.DataFrame:
        """`column` summed over the rows of each value of `by` (a tree of partial sums, not a gather),
        sorted by `by`."""
        summed = self._compute([part.frame.groupby(list(by))[column].sum()])[0]
        return summed.sort_index().reset_index()

    def collect(self, part: Partitioned) -> pd.DataFrame:
        """The whole table in this process, in partition order (only for what is known to be small)."""
        return self._compute([part.frame])[0].reset_index(drop=True)

    # --- writing ----------------------------------------------------------------------------

    def write_records(self, part: Partitioned, path: Path) -> int:
        """Write `part` as a record set at `path` in the canonical layout; return its record count."""
        spills = list(part.spills)
        if not spills:
            spills = [self._spill_path("records") for _ in range(part.partitions)]
            tasks = [dask.delayed(io.write_spill)(data, out) for data, out in zip(part.frame.to_delayed(), spills, strict=True)]
            self._compute(tasks)
        sizes = [io.spill_size(s) for s in spills]
        rows, payload = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
        with io.replacing_folder(path) as tmp:
            ranges = io.shard_ranges(io.shard_count(rows, payload))
            tasks = [dask.delayed(io.assemble_shard)(spills, lo, hi, tmp / io.shard_name(k)) for k, (lo, hi) in enumerate(ranges)]
            self._compute(tasks)
        return rows

    # --- internals --------------------------------------------------------------------------

    def _compute(self, tasks: list) -> list:
        """The results of `tasks`, in order, with a progress bar on a terminal (tqdm: off in CI logs)."""
        if not tasks:
            return []
        desc = f"{self.stage} {_caller()}"
        keys = {key for task in tasks for key in task.__dask_graph__()} if self._exchanges else set()
        if self.session.distributed:
            from distributed import as_completed

            futures = self.session.client.compute(tasks)
            with tqdm(total=len(futures), desc=desc, unit="part", disable=None, leave=False) as bar:
                for _ in as_completed(futures):
                    bar.update(1)
            results = self.session.client.gather(futures)
        else:
            with _TaskBar(desc):
                results = list(dask.compute(*tasks))
        self._release_exchanges(keys)
        return results

    def _exchange(self, frame: dd.DataFrame, target: Callable[[pd.DataFrame], np.ndarray], outputs: int) -> dd.DataFrame:
        """`frame`'s rows moved to the output partition `target` gives each (a shuffle), lazily.

        Each input partition writes one spill file, its rows grouped by output partition, each group
        pickled on its own; output partition j reads its group from every file, in input order.
        Memory holds a partition or two whatever the corpus size, and a retried task rewrites its
        own file, the same bytes. The files go once a compute has read them (see `_compute`).
        """
        path = self._spill_path("shuffle")
        writes = [dask.delayed(_scatter, pure=False)(data, target, outputs, path.with_suffix(f".{i}"))
                  for i, data in enumerate(frame.to_delayed())]
        written, meta = dask.delayed(list, pure=False)(writes), dask.delayed(frame._meta, pure=False)  # one node each, not one per read
        reads = [dask.delayed(_gather, pure=False)(written, j, meta) for j in range(outputs)]
        self._exchanges.append((frozenset(r.key for r in reads), [path.with_suffix(f".{i}") for i in range(len(writes))]))
        return dd.from_delayed(reads, meta=frame._meta, verify_meta=False)

    def _release_exchanges(self, graph_keys: set) -> None:
        """Delete the files of the exchanges a finished compute has read. A later compute of the same
        lazy table writes them again first: its writes are part of its graph."""
        kept = []
        for reads, paths in self._exchanges:
            if reads & graph_keys:
                for path in paths:
                    path.unlink(missing_ok=True)
            else:
                kept.append((reads, paths))
        self._exchanges = kept

    def _spill_path(self, kind: str) -> Path:
        self._spilled += 1
        return self.scratch / f"{kind}-{self._spilled:06d}.parquet"

    def _spill_reader(self, paths: list[Path], labels: tuple[str, ...], *, meta: pd.DataFrame,
                      sorted_by_id: bool = False) -> Partitioned:
        frame = dd.from_map(io.read_spill, paths, meta=meta, enforce_metadata=False)
        return Partitioned(frame, labels, tuple(paths) if sorted_by_id else (), paths=tuple(paths))


class _TaskBar(Callback):
    """A tqdm bar over the tasks of one local compute."""

    def __init__(self, desc: str) -> None:
        super().__init__()
        self._desc, self._bar = desc, None

    def _start(self, dsk) -> None:
        self._bar = tqdm(total=len(dsk), desc=self._desc, unit="task", disable=None, leave=False)

    def _posttask(self, key, result, dsk, state, worker_id) -> None:
        self._bar.update(1)

    def _finish(self, dsk, state, errored) -> None:
        self._bar.close()


def _caller() -> str:
    """The engine method the current compute serves (for the progress bar's label)."""
    frame = sys._getframe(2)
    return frame.f_code.co_name.strip("_")


def _spill_table(data: pd.DataFrame, path: Path, schema: pa.Schema, key: str | None) -> int | None:
    """Spill one partition (sorted by `key`); return its smallest key."""
    if key is not None:
        data = data.sort_values(key, kind="stable")
    io.write_table_spill(data, path, schema)
    return int(data[key].iloc[0]) if key is not None and len(data) else None


def _first_key(data: pd.DataFrame) -> int | None:
    return int(data["id"].iloc[0], 16) if len(data) else None


def _running_bounds(firsts: list[int | None]) -> list[int]:
    """Each partition's smallest key; an empty partition takes the next non-empty one's (or the end)."""
    bounds, following = [], None
    for first in reversed(firsts):
        following = first if first is not None else following
        bounds.append(following if following is not None else np.iinfo(np.uint64).max)
    bounds.reverse()
    bounds[0] = 0
    return bounds


def _in_range(frame: pd.DataFrame, key: str, bounds: np.ndarray) -> np.ndarray:
    """The partition whose key range (from its smallest key in `bounds`) holds each row's `key`."""
    return np.searchsorted(bounds, frame[key].to_numpy(np.uint64), side="right") - 1


def _hashed(frame: pd.DataFrame, by: list[str]) -> np.ndarray:
    """A hash of each row's `by` values (pandas' own: the same in every process)."""
    return pd.util.hash_pandas_object(frame[by], index=False).to_numpy(np.uint64)


def _scatter(data: pd.DataFrame, target: Callable[[pd.DataFrame], np.ndarray], outputs: int,
             path: Path) -> tuple[Path, np.ndarray]:
    """Write a partition's rows grouped by output partition (each group pickled alone) to `path`,
    atomically; return the path and where each group starts in the file (and the last ends)."""
    where = np.asarray(target(data), dtype=np.uint64) % np.uint64(max(outputs, 1))
    order = np.argsort(where, kind="stable")
    starts = np.searchsorted(where[order], np.arange(outputs + 1, dtype=np.uint64))
    offsets = np.zeros(outputs + 1, dtype=np.int64)
    tmp = path.with_name(path.name + ".tmp")
    columns = {name: _column(data[name]) for name in data.columns}
    with io.writing(path, tmp), open(tmp, "wb") as out:
        for j in range(outputs):
            if starts[j + 1] > starts[j]:
                rows = order[starts[j]:starts[j + 1]]
                out.write(pickle.dumps({name: values[rows] for name, values in columns.items()}, protocol=pickle.HIGHEST_PROTOCOL))
            offsets[j + 1] = out.tell()
    os.replace(tmp, path)
    return path, offsets


def _gather(writes: list[tuple[Path, np.ndarray]], j: int, meta: pd.DataFrame) -> pd.DataFrame:
    """Output partition `j` of an exchange: its group from every input's file, in input order."""
    pieces = []
    for path, offsets in writes:
        start, end = int(offsets[j]), int(offsets[j + 1])
        if end > start:
            with open(path, "rb") as handle:
                handle.seek(start)
                pieces.append(pickle.loads(handle.read(end - start)))
    if not pieces:
        return meta.iloc[0:0]
    return pd.DataFrame({name: _joined([p[name] for p in pieces]) for name in meta.columns}, columns=meta.columns)


def _column(series: pd.Series):
    """A column's values as one array (numpy, or pandas' own for extension types such as Int64)."""
    return series.to_numpy() if isinstance(series.dtype, np.dtype) else series.array


def _joined(arrays: list):
    return np.concatenate(arrays) if isinstance(arrays[0], np.ndarray) else type(arrays[0])._concat_same_type(arrays)


def _sorted_call(frame: pd.DataFrame, fn: Callable[[pd.DataFrame], pd.DataFrame] | None, order: list[str]) -> pd.DataFrame:
    ordered = frame.sort_values(order, kind="stable").reset_index(drop=True)
    return ordered if fn is None else fn(ordered)


def _reset_call(fn: Callable[..., pd.DataFrame], *frames: pd.DataFrame) -> pd.DataFrame:
    return fn(*(f.reset_index(drop=True) for f in frames))


def _run_step(data: pd.DataFrame, step: Step, label: str, records: Path, fates: Path, schema: pa.Schema | None) -> dict[str, int]:
    """One partition through `step`, its outputs spilled; an error names the partition."""
    try:
        processed = step(data)
    except UserError as exc:
        raise type(exc)(f"{label}: {exc}") from exc
    except Exception as exc:
        exc.add_note(f"while processing partition {label}")
        raise
    if schema is None:
        io.write_spill(processed.records, records)
    else:
        io.write_table_spill(processed.records, records, schema)
    io.write_table(processed.fates.table(), fates)
    return dict(processed.counts)
