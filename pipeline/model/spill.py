"""Per-record tensors kept in a file, so that the model stages hold one batch of inputs, not a split.

A model's inputs (token ids, the frozen prefix's output, decoded pixels, cached features) are made
once and read back batch by batch in an order the training loop draws. `TensorFile` is a list of
tensors that lives on disk: rows are written with `append` (in order) or into slots sized
beforehand (`allocate`, for outputs made out of order), and read back one by one with `pread`.
Nothing is memory-mapped, so what a stage has read does not stay in its resident memory.

`MEMORY` keeps the same rows in a Python list (tests, small frames); `FileStore` puts them in a
scratch folder. Both give back the very tensors they were given, so a model trains on the same
bits either way.
"""
from __future__ import annotations

import os
from array import array
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from pipeline.errors import StageError
from pipeline.io import empty_records, record_chunks

CHUNK_ROWS = 8_192  # records read from a split at a time


class Rows(Protocol):
    """A sequence of per-record tensors: what `TensorFile` and a plain list both are."""

    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> torch.Tensor: ...
    def __setitem__(self, i: int, value: torch.Tensor) -> None: ...
    def append(self, value: torch.Tensor) -> None: ...


class Store(Protocol):
    def rows(self, name: str, dtype: torch.dtype, *, tail: tuple[int, ...] = (),
             lengths: Sequence[int] | None = None) -> Rows: ...


class MemoryStore:
    """Rows in a Python list (`lengths` only says how many slots)."""

    def rows(self, name: str, dtype: torch.dtype, *, tail: tuple[int, ...] = (),
             lengths: Sequence[int] | None = None) -> Rows:
        return [] if lengths is None else [torch.empty(0)] * len(lengths)


MEMORY = MemoryStore()


class FileStore:
    """Rows in files of `folder` (a scratch folder the caller removes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.files: list[TensorFile] = []

    def rows(self, name: str, dtype: torch.dtype, *, tail: tuple[int, ...] = (),
             lengths: Sequence[int] | None = None) -> Rows:
        file = TensorFile(self.folder / f"{name}-{len(self.files)}.bin", dtype, tail=tail, lengths=lengths)
        self.files.append(file)
        return file

    def close(self) -> None:
        for file in self.files:
            file.close()


class TensorFile:
    """Tensors of one dtype and one trailing shape, of any length along their first axis, in a file.

    Without `lengths` the file grows by `append`; with them, its slots are laid out up front and
    filled in any order by assignment (`tail` must then be given).
    """

    def __init__(self, path: Path, dtype: torch.dtype, *, tail: tuple[int, ...] = (),
                 lengths: Sequence[int] | None = None) -> None:
        self.path, self.dtype = Path(path), dtype
        self._numpy = torch.empty(0, dtype=dtype).numpy().dtype
        self.tail: tuple[int, ...] | None = tuple(tail) if (tail or lengths is not None) else None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._lengths, self._offsets = array("q"), array("q", [0])
        if lengths is not None:
            self._lengths.extend(int(n) for n in lengths)
            sizes = np.asarray(self._lengths, dtype=np.int64) * self._row_bytes()
            self._offsets.extend(np.cumsum(sizes).tolist())
            os.ftruncate(self._fd, self._offsets[-1])

    def __len__(self) -> int:
        return len(self._lengths)

    def append(self, value: torch.Tensor) -> None:
        if self.tail is None:
            self.tail = tuple(value.shape[1:])
        data = self._checked(value)
        self._write(data, self._offsets[-1])
        self._lengths.append(value.shape[0])
        self._offsets.append(self._offsets[-1] + data.nbytes)

    def __setitem__(self, i: int, value: torch.Tensor) -> None:
        data = self._checked(value)
        if value.shape[0] != self._lengths[i]:
            raise ValueError(f"row {i} has room for {self._lengths[i]} along its first axis, not {value.shape[0]}")
        self._write(data, self._offsets[i])

    def __getitem__(self, i: int) -> torch.Tensor:
        out = np.empty((self._lengths[i], *(self.tail or ())), dtype=self._numpy)
        view, offset = memoryview(out).cast("B"), self._offsets[i]
        while view.nbytes:
            read = os.preadv(self._fd, [view], offset)
            if read == 0:
                raise OSError(f"{self.path}: row {i} ends before its {out.nbytes} bytes")
            view, offset = view[read:], offset + read
        return torch.from_numpy(out)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _row_bytes(self) -> int:
        return int(np.prod(self.tail or (), dtype=np.int64)) * self._numpy.itemsize

    def _checked(self, value: torch.Tensor) -> np.ndarray:
        if value.dtype != self.dtype:
            raise TypeError(f"{self.path.name} holds {self.dtype}, not {value.dtype}")
        if self.tail is not None and tuple(value.shape[1:]) != self.tail:
            raise ValueError(f"{self.path.name} holds rows of shape (n, {self.tail}), not {tuple(value.shape)}")
        return np.ascontiguousarray(value.detach().cpu().numpy())

    def _write(self, data: np.ndarray, offset: int) -> None:
        view = memoryview(data).cast("B")
        while view.nbytes:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written


def frames(records: pd.DataFrame | Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """The frames of `records`: one frame as it is, or each of an iterable of frames."""
    if isinstance(records, pd.DataFrame):
        yield records
    else:
        yield from records


def runs(values: Iterable[object], size: int) -> Iterator[list[object]]:
    """`values` in consecutive lists of `size` (the last may be shorter), across any chunking."""
    run: list[object] = []
    for value in values:
        run.append(value)
        if len(run) == size:
            yield run
            run = []
    if run:
        yield run


def index_batches(order: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """`order` (row indices) cut into batches of `size`; none when it is empty, where torch's own
    split gives one empty batch (an empty split trains or scores nothing, it does not fail)."""
    return order.split(size) if len(order) else ()


def stacked(rows: Rows, index: torch.Tensor | slice | Sequence[int]) -> torch.Tensor:
    """The rows at `index`, stacked along a new first axis."""
    picked = range(len(rows))[index] if isinstance(index, slice) else (index.tolist() if torch.is_tensor(index) else index)
    return torch.stack([rows[i] for i in picked])


# --- a split's records, chunk by chunk ------------------------------------------------------

def split_frames(path: Path, column: str, labels: Collection[str] | None = None, rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Id, label and `column` of the record set at `path`, `rows` records at a time in id order;
    only the records whose label is in `labels`, when given."""
    for chunk in record_chunks(path, ["id", "label", column], rows=rows):
        yield chunk if labels is None else chunk[chunk["label"].isin(labels)].reset_index(drop=True)


def first_records(path: Path, column: str, labels: Collection[str] | None, n: int) -> pd.DataFrame:
    """The first `n` records `split_frames` gives (fewer when the set has fewer)."""
    taken: list[pd.DataFrame] = []
    for chunk in split_frames(path, column, labels, rows=max(n, 1)):
        taken.append(chunk)
        if sum(len(c) for c in taken) >= n:
            break
    return pd.concat(taken, ignore_index=True).head(n) if taken else empty_records(["id", "label", column])


def feature_rows(path: Path, ids: pd.Series, store: Store) -> Rows:
    """The features stage's vectors of `ids` (a subset of its file's, in id order), one row each;
    fails naming the first id it has no vector for."""
    wanted, rows = set(ids), store.rows("features", torch.float32)
    found: list[str] = []
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=["id", "features"]):
        keys = batch.column("id").to_pylist()
        width = batch.schema.field("features").type.list_size
        matrix = batch.column("features").flatten().to_numpy().reshape(-1, width)
        for key, vector in zip(keys, matrix):
            if key in wanted:
                rows.append(torch.from_numpy(vector.copy()))
                found.append(key)
    if found != list(ids):
        present = set(found)
        missing = [key for key in ids if key not in present]
        if not missing:
            raise StageError(f"{path}: the records asked for are not in its id order; rerun the features stage")
        raise StageError(f"{path} has no features for record {missing[0]!r} ({len(missing)} missing): rerun the features stage")
    return rows
