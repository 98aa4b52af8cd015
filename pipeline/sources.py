"""Readers for the input formats: every row or file becomes a raw record, or a rejection with a reason.

A reader never skips anything silently: a row it cannot use comes back with `reject` set to a
reason and `detail` naming the file and line. Ids depend only on where a record came from (file
and row, or relative path), so they are stable across runs. Source files are only read.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import os
import posixpath
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import SourceError
from pipeline.params import DatasetParams
from pipeline.records import make_id

RAW_COLUMNS = ["id", "label", "text", "image", "source", "source_row", "source_split", "reject", "detail"]
RAW_SCHEMA = pa.schema([
    ("id", pa.string()), ("label", pa.string()), ("text", pa.string()), ("image", pa.binary()), ("source", pa.string()),
    ("source_row", pa.int64()), ("source_split", pa.string()), ("reject", pa.string()), ("detail", pa.string()),
])
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


@dataclass(slots=True)
class Raw:
    """One row or file as read, before any cleaning."""

    source: str
    source_row: int | None
    label: object = None
    text: object = None
    image: bytes | None = None
    source_split: str | None = None
    reject: str | None = None
    detail: str | None = None


def read_source(dataset: DatasetParams, root: Path = Path(".")) -> pd.DataFrame:
    """All rows or files of `dataset` as a raw frame (columns RAW_COLUMNS), in source order."""
    chunks = list(source_chunks(dataset, root, rows=1 << 62))
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    frame.attrs = chunks[0].attrs
    return frame


def source_chunks(dataset: DatasetParams, root: Path = Path("."), *, rows: int) -> Iterator[pd.DataFrame]:
    """The rows or files of `dataset` as raw frames of at most `rows` rows each, in source order (at
    least one frame, maybe empty). A detected encoding is in each frame's `attrs["encoding"]`."""
    path = root / dataset.source
    if not path.exists():
        raise SourceError(f"source {dataset.source!r} does not exist (resolved to {path})")
    reader = {
        "csv": _read_delimited,
        "tsv": _read_delimited,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "image_folder": _read_image_folder,
        "image_manifest": _read_image_manifest,
    }[dataset.format]
    detected = None
    if dataset.encoding == "auto" and path.is_file() and dataset.format != "parquet":
        detected = detect_encoding(path.read_bytes())
        dataset = dataset.model_copy(update={"encoding": detected})
    attrs = {"encoding": detected} if detected else {}
    emitted = False
    for batch in _batches(reader(path, dataset), rows):
        yield _raw_frame(batch, attrs)
        emitted = True
    if not emitted:
        yield _raw_frame([], attrs)


def _batches(items: Iterator[Raw], size: int) -> Iterator[list[Raw]]:
    batch: list[Raw] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _raw_frame(rows: list[Raw], attrs: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": [make_id(r.source, r.source_row if r.source_row is not None else "") for r in rows],
            "label": [None if r.label is None else str(r.label) for r in rows],
            "text": [r.text if r.text is None or isinstance(r.text, str) else str(r.text) for r in rows],
            "image": [r.image for r in rows],
            "source": [r.source for r in rows],
            "source_row": pd.array([r.source_row for r in rows], dtype="Int64"),
            "source_split": [r.source_split for r in rows],
            "reject": [r.reject for r in rows],
            "detail": [r.detail for r in rows],
        },
        columns=RAW_COLUMNS,
    )
    frame.attrs.update(attrs)
    return frame


# --- text formats ---------------------------------------------------------------------------

def _decode(path: Path, encoding: str) -> str:
    """File text with a BOM removed; undecodable bytes kept as surrogates so their rows can be rejected."""
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    return path.read_bytes().decode(codec, errors="surrogateescape")


BOMS = [(codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def detect_encoding(data: bytes) -> str:
    """The encoding of `data`: from its BOM, else UTF-8 if it decodes, else charset-normalizer's guess."""
    for bom, name in BOMS:
        if data.startswith(bom):
            return name
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data[:1_000_000]).best()
    return best.encoding if best is not None else "cp1252"


# Undecodable bytes (kept by errors="surrogateescape") and lone surrogates from JSON escapes such as
# "\ud800": no UTF-8 text can hold them.
SURROGATES = re.compile("[\ud800-\udfff]")


def _has_surrogates(text: str) -> bool:
    return not text.isascii() and SURROGATES.search(text) is not None


def _read_delimited(path: Path, dataset: DatasetParams) -> Iterator[Raw]:
    text = _decode(path, dataset.encoding)
    if dataset.format == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
    rows = _numbered_rows(reader, path.name)
    first = next(rows, None)
    if first is None:
        return
    names = first[1] if dataset.header else [str(i) for i in range(len(first[1]))]
    want = _text_columns(dataset)
    missing = [c for c in want if c not in names]
    if missing:
        hint = "" if dataset.header else " (without a header, columns are named by position: '0', '1', ...)"
        raise SourceError(f"{path.name}: columns {missing} not in {names}{hint}")
    index = {name: names.index(name) for name in want}
    for start, fields in ([] if dataset.header else [first]) + list(rows):
        if isinstance(fields, Raw):
            yield fields
        elif fields:  # a blank line holds no record
            yield _row_to_raw(path.name, start, fields, names, index)


def _numbered_rows(reader: Iterator[list[str]], source: str) -> Iterator[tuple[int, list[str] | Raw]]:
    """(first line number, fields) per row; a row the csv module cannot parse becomes a rejection."""
    line = 0
    with _unlimited_fields():
        while True:
            try:
                fields: list[str] | Raw = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                fields = Raw(source, line + 1, reject="malformed_row", detail=f"{source}:{line + 1}: {exc}")
            start, line = line + 1, reader.line_num
            yield start, fields


@contextlib.contextmanager
def _unlimited_fields() -> Iterator[None]:
    """Lift the csv module's field size limit (131,072 chars, process-wide) while a file is read.

    Longer fields are texts for clean's max_chars to judge, not malformed rows.
    """
    previous = csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _text_columns(dataset: DatasetParams) -> list[str]:
    cols = dataset.columns
    return [cols.text, cols.label] + ([cols.split] if cols.split and dataset.source_split == "keep" else [])


def _row_to_raw(source: str, row: int, fields: list[str], names: list[str], index: dict[str, int]) -> Raw:
    where = f"{source}:{row}"
    if len(fields) != len(names):
        return Raw(source, row, reject="ragged_row", detail=f"{where}: {len(fields)} fields, header has {len(names)}")
    values = {name: fields[i] for name, i in index.items()}
    return _values_to_raw(source, row, values, list(index))


def _values_to_raw(source: str, row: int, values: dict[str, object], order: list[str]) -> Raw:
    text_col, label_col = order[0], order[1]
    split_col = order[2] if len(order) > 2 else None
    where = f"{source}:{row}"
    joined = "".join(str(v) for v in values.values() if v is not None)
    if _has_surrogates(joined):
        return Raw(source, row, reject="invalid_encoding", detail=f"{where}: bytes not valid in the declared encoding")
    if "\x00" in joined:
        return Raw(source, row, reject="nul_byte", detail=f"{where}: NUL byte in a field")
    split = values.get(split_col) if split_col else None
    return Raw(source, row, label=values.get(label_col), text=values.get(text_col), source_split=None if split is None else str(split))


def _read_jsonl(path: Path, dataset: DatasetParams) -> Iterator[Raw]:
    order = _text_columns(dataset)
    # Split on "\n" only: str.splitlines() also breaks at U+2028/U+2029/U+0085, which JSON
    # writers leave unescaped inside strings.
    for number, line in enumerate(_decode(path, dataset.encoding).split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Raw(path.name, number, reject="malformed_json", detail=f"{path.name}:{number}: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield Raw(path.name, number, reject="malformed_json", detail=f"{path.name}:{number}: not a JSON object")
            continue
        yield _values_to_raw(path.name, number, {c: obj.get(c) for c in order}, order)


def _read_parquet(path: Path, dataset: DatasetParams) -> Iterator[Raw]:
    order = _text_columns(dataset)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    for file in files:
        names = pq.read_schema(file).names
        missing = [c for c in order if c not in names]
        if missing:
            raise SourceError(f"{file.name}: columns {missing} not in {names}")
        table = pq.read_table(file, columns=order).to_pydict()
        for i in range(len(table[order[0]])):
            yield _values_to_raw(file.name, i + 1, {c: table[c][i] for c in order}, order)


# --- image formats --------------------------------------------------------------------------

def _read_image_folder(path: Path, dataset: DatasetParams) -> Iterator[Raw]:
    depth = 3 if dataset.folder_layout == "split/label" else 2
    root = path.resolve()
    for file in _walk(path):
        parts = file.relative_to(path).parts
        rel = "/".join(parts)
        if file.is_symlink() and file.is_dir():
            yield Raw(rel, None, reject="outside_root" if not file.resolve().is_relative_to(root) else "symlinked_folder",
                      detail=f"{rel}: symlinked folder, not followed")
            continue
        if len(parts) != depth and not _hidden(rel):
            yield Raw(rel, None, reject="unexpected_location", detail=f"{rel}: expected root/{dataset.folder_layout}/<file>")
            continue
        raw = _image_file(file, rel, root)
        if len(parts) == depth:
            raw.label = parts[-2]
            raw.source_split = parts[0] if depth == 3 and dataset.source_split == "keep" else None
        yield raw


def _walk(path: Path) -> list[Path]:
    """Every file, and every symlinked folder (not followed), under `path`, sorted."""
    found = []
    for folder, dirs, files in os.walk(path, followlinks=False):
        found.extend(Path(folder) / name for name in files)
        found.extend(Path(folder) / name for name in dirs if (Path(folder) / name).is_symlink())
    return sorted(found)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _image_file(file: Path, rel: str, root: Path) -> Raw:
    """Bytes of one image file, or a rejection (hidden, outside the root, not an image)."""
    if _hidden(rel):
        return Raw(rel, None, reject="hidden_file", detail=f"{rel}: hidden file or folder")
    if not file.resolve().is_relative_to(root):
        return Raw(rel, None, reject="outside_root", detail=f"{rel}: resolves outside the dataset root")
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        return Raw(rel, None, reject="not_an_image_file", detail=f"{rel}: extension {file.suffix or '(none)'!r}")
    if not file.is_file():
        return Raw(rel, None, reject="missing_file", detail=f"{rel}: broken link or not a regular file")
    return Raw(rel, None, image=file.read_bytes())


def _read_image_manifest(path: Path, dataset: DatasetParams) -> Iterator[Raw]:
    root = (path.parent / dataset.image_root) if dataset.image_root else path.parent
    cols = dataset.columns
    reader = csv.DictReader(io.StringIO(_decode(path, dataset.encoding), newline=""))
    missing = [c for c in (cols.path, cols.label) if c not in (reader.fieldnames or [])]
    if missing:
        raise SourceError(f"{path.name}: columns {missing} not in header {reader.fieldnames}")
    for row in reader:
        number = reader.line_num
        raw = _manifest_entry(root, str(row.get(cols.path) or ""), number, path.name, dataset.allow_absolute_paths)
        raw.label = row.get(cols.label)
        if cols.split and dataset.source_split == "keep":
            raw.source_split = row.get(cols.split)
        yield raw


def _absolute_entry(file: Path, number: int, where: str) -> Raw:
    """An absolute manifest path the user allowed: read as given, recorded as given."""
    raw = _image_file(file, file.name, file.parent.resolve()) if file.is_file() else \
        Raw(str(file), number, reject="missing_file", detail=f"{where}: {file} not found")
    raw.source, raw.source_row = str(file), number
    if raw.detail and not raw.detail.startswith(where):
        raw.detail = f"{where}: {raw.detail}"
    return raw


def _manifest_entry(root: Path, entry: str, number: int, manifest: str, allow_absolute: bool = False) -> Raw:
    where = f"{manifest}:{number}"
    if not entry:
        return Raw(f"{manifest}:{number}", number, reject="missing_path", detail=f"{where}: empty path")
    if Path(entry).is_absolute():
        if not allow_absolute:
            return Raw(entry, number, reject="absolute_path", detail=f"{where}: absolute paths are refused (allow_absolute_paths)")
        return _absolute_entry(Path(entry), number, where)
    entry = posixpath.normpath(entry.replace("\\", "/"))
    file = root / entry
    if not file.resolve().is_relative_to(root.resolve()):
        return Raw(entry, number, reject="outside_root", detail=f"{where}: {entry} resolves outside the image root")
    if not file.is_file():
        return Raw(entry, number, reject="missing_file", detail=f"{where}: {entry} not found")
    raw = _image_file(file, entry, root.resolve())
    raw.source_row = number
    if raw.detail:
        raw.detail = f"{where}: {raw.detail}"
    return raw
