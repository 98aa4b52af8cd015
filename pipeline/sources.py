"""Readers for the input formats: every row or file becomes a raw record, or a rejection with a reason.

A reader never skips anything silently: a row it cannot use comes back with `reject` set to a
reason and `detail` naming the file and line. Ids depend only on where a record came from (file
and row, or relative path), so they are stable across runs. Source files are only read.
"""
from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import functools
import glob
import io
import itertools
import json
import os
import posixpath
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import SourceError
from pipeline.params import DatasetParams, file_patterns
from pipeline.records import make_id

RAW_COLUMNS = ["id", "label", "text", "image", "source", "source_row", "source_split", "metadata", "reject", "detail"]
RAW_SCHEMA = pa.schema([
    ("id", pa.string()), ("label", pa.string()), ("text", pa.string()), ("image", pa.binary()), ("source", pa.string()),
    ("source_row", pa.int64()), ("source_split", pa.string()), ("metadata", pa.string()), ("reject", pa.string()),
    ("detail", pa.string()),
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
    metadata: str | None = None  # the declared metadata columns' values, as canonical JSON (`metadata_json`)
    reject: str | None = None
    detail: str | None = None
    origin: str | None = None  # the manifest among several that listed it (part of its id)


def read_source(dataset: DatasetParams, root: Path = Path(".")) -> pd.DataFrame:
    """All rows or files of `dataset` as a raw frame (columns RAW_COLUMNS), in source order."""
    chunks = list(source_chunks(dataset, root, rows=1 << 62))
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    frame.attrs = source_attrs([c.attrs for c in chunks])
    return frame


def source_chunks(dataset: DatasetParams, root: Path = Path("."), *, rows: int) -> Iterator[pd.DataFrame]:
    """The rows or files of `dataset` as raw frames of at most `rows` rows each, file by file in
    source order (at least one frame, maybe empty). Each frame's `attrs` name its `file` and, when
    detected, its `encoding`."""
    emitted = False
    for name, raws, attrs in _streams(dataset, root):
        for batch in _batches(raws, rows):
            yield _raw_frame(batch, {"file": name, **attrs})
            emitted = True
    if not emitted:
        yield _raw_frame([], {"file": dataset.source})


def source_attrs(chunks: list[dict[str, str]]) -> dict[str, str]:
    """What reading found, from its frames' `attrs`, for the metrics: the detected `encoding` (per
    file where they differ)."""
    found = {attrs["file"]: attrs["encoding"] for attrs in chunks if "encoding" in attrs}
    if not found:
        return {}
    if len(set(found.values())) == 1:
        return {"encoding": next(iter(found.values()))}
    return {"encoding": ", ".join(f"{enc} ({name})" for name, enc in found.items())}


def _streams(dataset: DatasetParams, root: Path) -> Iterator[tuple[str, Iterator[Raw], dict[str, str]]]:
    """(name, raw records, attrs) per file of the source (an image folder is one stream)."""
    if dataset.format == "image_folder":
        local = _local_path(dataset.source)
        if local is None:
            yield dataset.source, _read_remote_image_folder(dataset.source, dataset), {}
        else:
            yield dataset.source, _read_image_folder(_local_source(dataset.model_copy(update={"source": str(local)}), root), dataset), {}
        return
    reader = {"csv": _read_delimited, "tsv": _read_delimited, "jsonl": _read_jsonl, "parquet": _read_parquet,
              "image_manifest": _read_image_manifest}[dataset.format]
    for file in source_files(dataset, root):
        options, attrs = dataset, {}
        if dataset.encoding == "auto" and dataset.format != "parquet":
            attrs["encoding"] = detect_file_encoding(file)  # a pass of its own, so that neither pass holds the file
            options = dataset.model_copy(update={"encoding": attrs["encoding"]})
        yield file.name, _with_split(reader(file, options), file.split), attrs


def _with_split(raws: Iterator[Raw], split: str | None) -> Iterator[Raw]:
    for raw in raws:
        if split is not None:
            raw.source_split = split
        yield raw


# --- which files ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file of a source: where it is (a path or an fsspec URL), its name in ids and messages
    (relative to the source folder), and the split its records get (from a files mapping)."""

    location: str
    name: str
    split: str | None = None

    def open(self) -> BinaryIO:
        if not is_url(self.location):
            return open(self.location, "rb")  # noqa: SIM115 (the caller closes it)
        return _filesystem(self.location)[0].open(self.location, "rb")


def is_url(source: str) -> bool:
    return "://" in source


def source_files(dataset: DatasetParams, root: Path = Path(".")) -> list[SourceFile]:
    """The files a text source or an image manifest reads, in order: the source file itself, a
    parquet folder's files, or what `files` picks inside the source folder (globs sorted); a file
    picked twice is an error."""
    if dataset.files is None:
        return _whole_source(dataset, root)
    lister = _url_lister(dataset.source) if is_url(dataset.source) else _local_lister(dataset, root)
    keep = dataset.source_split == "keep"
    chosen: dict[str, tuple[SourceFile, str]] = {}
    for split, pattern in file_patterns(dataset.files):
        found = lister(pattern)
        if not found:
            raise SourceError(f"{pattern!r} matches no file in {dataset.source}", key="files")
        for location, name in found:
            if name in chosen:
                raise SourceError(f"{name} is picked by both {chosen[name][1]!r} and {pattern!r}; pick each file once", key="files")
            chosen[name] = SourceFile(location, name, split if keep else None), pattern
    return [file for file, _ in chosen.values()]


def _whole_source(dataset: DatasetParams, root: Path) -> list[SourceFile]:
    if is_url(dataset.source):
        fs, path = _filesystem(dataset.source)
        if not fs.exists(path):
            raise SourceError(f"{dataset.source!r} does not exist", key="source")
        if fs.isdir(path):
            return [SourceFile(location, name) for location, name in _url_lister(dataset.source)("*.parquet")]
        return [SourceFile(dataset.source, posixpath.basename(path))]
    path = _local_source(dataset, root)
    if path.is_dir():
        if dataset.format != "parquet":
            raise SourceError(f"{dataset.source!r} is a folder; name its files with `files` (a glob, a list or a split mapping)", key="source")
        return [SourceFile(str(file), file.name) for file in sorted(path.glob("*.parquet"))]
    return [SourceFile(str(path), path.name)]


def _local_source(dataset: DatasetParams, root: Path) -> Path:
    path = root / dataset.source
    if not path.exists():
        raise SourceError(f"{dataset.source!r} does not exist (resolved to {path})", key="source")
    return path


def _local_lister(dataset: DatasetParams, root: Path):
    folder = _local_source(dataset, root)
    if not folder.is_dir():
        raise SourceError(f"{dataset.source!r} must be the folder its `files` are in", key="source")
    inside = folder.resolve()

    def matches(pattern: str) -> list[tuple[str, str]]:
        if glob.has_magic(pattern):
            files = sorted(p for p in folder.glob(pattern) if p.is_file())
        else:
            files = [folder / pattern] if (folder / pattern).is_file() else []
        for file in files:
            if not file.resolve().is_relative_to(inside):
                raise SourceError(f"{file.relative_to(folder).as_posix()} resolves outside {dataset.source}; not read", key="files")
        return [(str(file), file.relative_to(folder).as_posix()) for file in files]

    return matches


def _url_lister(source: str):
    fs, base = _filesystem(source)
    base = base.rstrip("/")

    def matches(pattern: str) -> list[tuple[str, str]]:
        full = f"{base}/{pattern}"
        paths = sorted(fs.glob(full)) if glob.has_magic(pattern) else [full]
        files = [p for p in paths if fs.isfile(p)]
        return [(fs.unstrip_protocol(p), p[len(base) + 1:]) for p in files]

    return matches


def _filesystem(url: str):
    """The fsspec filesystem for `url` and the path within it; a clear error if its package is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"cannot open {url}: {exc}") from None


def _batches(items: Iterator[Raw], size: int) -> Iterator[list[Raw]]:
    batch: list[Raw] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _raw_id(raw: Raw) -> str:
    row = raw.source_row if raw.source_row is not None else ""
    return make_id(raw.source, row) if raw.origin is None else make_id(raw.origin, raw.source, row)


def _raw_frame(rows: list[Raw], attrs: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "id": [_raw_id(r) for r in rows],
            "label": [None if r.label is None else str(r.label) for r in rows],
            "text": [r.text if r.text is None or isinstance(r.text, str) else str(r.text) for r in rows],
            "image": [r.image for r in rows],
            "source": [r.source for r in rows],
            "source_row": pd.array([r.source_row for r in rows], dtype="Int64"),
            "source_split": [r.source_split for r in rows],
            "metadata": [r.metadata for r in rows],
            "reject": [r.reject for r in rows],
            "detail": [r.detail for r in rows],
        },
        columns=RAW_COLUMNS,
    )
    frame.attrs.update(attrs)
    return frame


# --- text formats ---------------------------------------------------------------------------

@contextlib.contextmanager
def _text_stream(file: SourceFile, encoding: str, newline: str = "") -> Iterator[io.TextIOWrapper]:
    """The file as text read as it is consumed, never all of it at once: a BOM removed, undecodable
    bytes kept as surrogates so that their rows can be rejected."""
    with file.open() as handle, io.TextIOWrapper(handle, encoding=_codec(encoding), errors="surrogateescape", newline=newline) as text:
        yield text


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


BOMS = [(codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def detect_file_encoding(file: SourceFile) -> str:
    """`detect_encoding` of a file's bytes, read in blocks: the same answer without holding the file."""
    with file.open() as handle:
        head = handle.read(DETECT_BLOCK)
        for bom, name in BOMS:
            if head.startswith(bom):
                return name
        decoder, block = codecs.getincrementaldecoder("utf-8")(), head
        try:
            while block:
                decoder.decode(block)
                block = handle.read(DETECT_BLOCK)
            decoder.decode(b"", final=True)
            return "utf-8"
        except UnicodeDecodeError:
            handle.seek(0)
            return _guess_encoding(handle.read(GUESS_BYTES))


DETECT_BLOCK = 1 << 24
GUESS_BYTES = 1_000_000  # what charset-normalizer is shown of a file that is not UTF-8


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
    return _guess_encoding(data[:GUESS_BYTES])


def _guess_encoding(head: bytes) -> str:
    """charset-normalizer's guess from a file's first bytes (cp1252 when it has none)."""
    from charset_normalizer import from_bytes

    best = from_bytes(head).best()
    return best.encoding if best is not None else "cp1252"


# Undecodable bytes (kept by errors="surrogateescape") and lone surrogates from JSON escapes such as
# "\ud800": no UTF-8 text can hold them.
SURROGATES = re.compile("[\ud800-\udfff]")


def _has_surrogates(text: str) -> bool:
    return not text.isascii() and SURROGATES.search(text) is not None


def _read_delimited(path: SourceFile, dataset: DatasetParams) -> Iterator[Raw]:
    with _text_stream(path, dataset.encoding) as text:
        yield from _delimited_rows(path, dataset, text)


def _delimited_rows(path: SourceFile, dataset: DatasetParams, text: io.TextIOWrapper) -> Iterator[Raw]:
    if dataset.format == "tsv":
        reader = csv.reader(text, delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(text)
    rows = _numbered_rows(reader, path.name)
    first = next(rows, None)
    if first is None:
        return
    names = first[1] if dataset.header else [str(i) for i in range(len(first[1]))]
    want = _text_columns(dataset)
    extra = _metadata_columns(dataset)
    missing = [c for c in [*want, *extra] if c not in names]
    if missing:
        hint = "" if dataset.header else " (without a header, columns are named by position: '0', '1', ...)"
        raise SourceError(f"{path.name}: columns {missing} not in {names}{hint}", key=column_key(dataset, missing[0]))
    index = {name: names.index(name) for name in [*want, *extra]}
    for start, fields in itertools.chain([] if dataset.header else [first], rows):
        if isinstance(fields, Raw):
            yield fields
        elif fields:  # a blank line holds no record
            yield _row_to_raw(path.name, start, fields, names, index, want, extra)


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


def _metadata_columns(dataset: DatasetParams) -> list[str]:
    """The declared metadata columns, by name."""
    return sorted(dataset.metadata)


def metadata_json(values: dict[str, object]) -> str | None:
    """Metadata values as canonical JSON (sorted keys; a value JSON cannot hold, such as a date, as
    its string); None when no column is declared."""
    if not values:
        return None
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def column_key(dataset: DatasetParams, column: str) -> str:
    """The params key (under the dataset's entry) that names `column`: `columns.text`, `columns.label`, ..."""
    if column in dataset.metadata:
        return f"metadata.{column}"
    return next(f"columns.{field}" for field, name in dataset.columns if name == column)


def _row_to_raw(source: str, row: int, fields: list[str], names: list[str], index: dict[str, int], order: list[str],
                extra: list[str]) -> Raw:
    """One row's fields as raw values; `order` lists the wanted columns (text, label[, split]), one
    column possibly serving twice; `extra` the metadata columns."""
    where = f"{source}:{row}"
    if len(fields) != len(names):
        return Raw(source, row, reject="ragged_row", detail=f"{where}: {len(fields)} fields, header has {len(names)}")
    values = {name: fields[i] for name, i in index.items()}
    return _values_to_raw(source, row, values, order, extra)


def _values_to_raw(source: str, row: int, values: dict[str, object], order: list[str], extra: list[str]) -> Raw:
    text_col, label_col = order[0], order[1]
    split_col = order[2] if len(order) > 2 else None
    problem = _field_problem(f"{source}:{row}", values.values())
    if problem:
        return Raw(source, row, reject=problem[0], detail=problem[1])
    split = values.get(split_col) if split_col else None
    return Raw(source, row, label=values.get(label_col), text=values.get(text_col), source_split=None if split is None else str(split),
               metadata=metadata_json({name: values.get(name) for name in extra}))


def _field_problem(where: str, values: Iterable[object]) -> tuple[str, str] | None:
    """(reason, detail) for fields no record can hold: bytes undecodable in the declared encoding
    (UTF-8 cannot store them) or a NUL byte (no file path can hold one either)."""
    joined = "".join(str(v) for v in values if v is not None)
    if _has_surrogates(joined):
        return "invalid_encoding", f"{where}: bytes not valid in the declared encoding"
    if "\x00" in joined:
        return "nul_byte", f"{where}: NUL byte in a field"
    return None


def _read_jsonl(path: SourceFile, dataset: DatasetParams) -> Iterator[Raw]:
    order, extra = _text_columns(dataset), _metadata_columns(dataset)
    seen: set[str] = set()  # the wanted columns some object held
    objects = False
    # Lines end at "\n" only: str.splitlines() also breaks at U+2028/U+2029/U+0085, which JSON
    # writers leave unescaped inside strings.
    with _text_stream(path, dataset.encoding, newline="\n") as text:
        for number, line in enumerate(text, start=1):
            line = line.removesuffix("\n").removesuffix("\r")
            if line.strip():
                raw = _jsonl_row(path.name, number, line, order, extra, seen)
                objects = objects or raw.reject != "malformed_json"
                yield raw
    missing = [c for c in [*order, *extra] if c not in seen]
    if objects and missing:  # a column no object has is a misnamed one, not records without it
        raise SourceError(f"{path.name}: columns {missing} in none of its objects", key=column_key(dataset, missing[0]))


def _jsonl_row(name: str, number: int, line: str, order: list[str], extra: list[str], seen: set[str]) -> Raw:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Raw(name, number, reject="malformed_json", detail=f"{name}:{number}: {exc.msg}")
    except (ValueError, RecursionError) as exc:  # a number past int()'s digit limit, nesting past the recursion limit
        return Raw(name, number, reject="malformed_json", detail=f"{name}:{number}: {str(exc)[:200]}")
    if not isinstance(obj, dict):
        return Raw(name, number, reject="malformed_json", detail=f"{name}:{number}: not a JSON object")
    seen.update(c for c in [*order, *extra] if c in obj)
    return _values_to_raw(name, number, {c: obj.get(c) for c in [*order, *extra]}, order, extra)


def _read_parquet(file: SourceFile, dataset: DatasetParams) -> Iterator[Raw]:
    order, extra = _text_columns(dataset), _metadata_columns(dataset)
    wanted = list(dict.fromkeys([*order, *extra]))
    with file.open() as handle:
        reader = pq.ParquetFile(handle)
        names = reader.schema_arrow.names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise SourceError(f"{file.name}: columns {missing} not in {names}", key=column_key(dataset, missing[0]))
        row = 0
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH, columns=wanted):
            columns = batch.to_pydict()
            for i in range(batch.num_rows):
                row += 1
                yield _values_to_raw(file.name, row, {c: columns[c][i] for c in wanted}, order, extra)


PARQUET_BATCH = 65_536


# --- image formats --------------------------------------------------------------------------

def _read_image_folder(path: Path, dataset: DatasetParams) -> Iterator[Raw]:
    root = path.resolve()
    for file in _walk(path):
        rel = "/".join(file.relative_to(path).parts)
        if _has_surrogates(rel):
            yield _undecodable_name(rel)
            continue
        if file.is_symlink() and file.is_dir():
            yield Raw(rel, None, reject="outside_root" if not file.resolve().is_relative_to(root) else "symlinked_folder",
                      detail=f"{rel}: symlinked folder, not followed")
            continue
        yield _placed(rel, dataset, functools.partial(_image_file, file, rel, root))


def _undecodable_name(rel: str) -> Raw:
    """A file whose path is not UTF-8: no record or ledger can hold its name, so it is refused,
    named with its odd bytes escaped (`\\xe9`)."""
    try:
        raw = rel.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = rel.encode("utf-8", "backslashreplace")
    shown = raw.decode("utf-8", "backslashreplace")
    return Raw(shown, None, reject="invalid_encoding", detail=f"{shown}: file name is not valid UTF-8")


def _placed(rel: str, dataset: DatasetParams, read: Callable[[], Raw]) -> Raw:
    """The file at `rel` in an image folder, read by `read`, with the label (and split) its place
    in the layout gives; unexpected_location, unread, where the layout has no place for it."""
    parts = rel.split("/")
    depth = 3 if dataset.folder_layout == "split/label" else 2
    if len(parts) != depth and not _hidden(rel):
        return Raw(rel, None, reject="unexpected_location", detail=f"{rel}: expected root/{dataset.folder_layout}/<file>")
    raw = read()
    if len(parts) == depth:
        raw.label = parts[-2]
        raw.source_split = parts[0] if depth == 3 and dataset.source_split == "keep" else None
    return raw


def _walk(path: Path) -> Iterator[Path]:
    """Every file, and every symlinked folder (not followed), under `path`, in the order of the
    sorted paths: depth first, each folder's names sorted, so only the names of the folders on the
    way are held, not the corpus's paths."""
    try:
        with os.scandir(path) as entries:
            names = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries)
    except OSError as exc:
        raise SourceError(f"cannot list the image folder {str(path)!r}: {exc.strerror or exc}") from exc
    for name, is_folder in names:
        if is_folder:
            yield from _walk(path / name)
        else:
            yield path / name


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _image_file(file: Path, rel: str, root: Path) -> Raw:
    """Bytes of one image file, or a rejection (hidden, outside the root, not an image)."""
    if _hidden(rel):
        return Raw(rel, None, reject="hidden_file", detail=f"{rel}: hidden file or folder")
    if not _real(file).is_relative_to(root):
        return Raw(rel, None, reject="outside_root", detail=f"{rel}: resolves outside the dataset root")
    if file.suffix.lower() not in IMAGE_EXTENSIONS:
        return Raw(rel, None, reject="not_an_image_file", detail=f"{rel}: extension {file.suffix or '(none)'!r}")
    if missing := _unusable_file(file):
        return Raw(rel, None, reject="missing_file", detail=f"{rel}: broken link or not a regular file ({missing})")
    try:
        return Raw(rel, None, image=file.read_bytes())
    except OSError as exc:
        return Raw(rel, None, reject="missing_file", detail=f"{rel}: cannot be read ({exc.strerror or exc})")


def _real(file: Path) -> Path:
    """`file` with its links followed, as `Path.resolve` but without its RuntimeError on a symlink
    loop: the loop is left unresolved, to be refused by `_unusable_file`."""
    return Path(os.path.realpath(file))


def _unusable_file(file: Path) -> str | None:
    """Why `file` is not a regular file to read (None when it is): missing, a folder or a pipe, a
    symlink loop, or a path the system refuses (a name too long)."""
    try:
        mode = file.stat().st_mode
    except OSError as exc:
        return "not found" if exc.errno == errno.ENOENT else (exc.strerror or str(exc)).lower()
    return None if stat.S_ISREG(mode) else "not a regular file"


def _read_image_manifest(file: SourceFile, dataset: DatasetParams) -> Iterator[Raw]:
    """The images a manifest lists, each read from beside it (or from `image_root`, relative to
    the manifest's folder): on this machine, or on the manifest's own fsspec filesystem."""
    cols = dataset.columns
    origin = file.name if dataset.files is not None else None  # several manifests: ids name theirs
    local = _local_path(file.location)
    if local is not None:
        root = (local.parent / dataset.image_root) if dataset.image_root else local.parent
        entry = functools.partial(_manifest_entry, root, allow_absolute=dataset.allow_absolute_paths)
    else:
        fs, path = _filesystem(file.location)
        root = posixpath.normpath(posixpath.join(posixpath.dirname(path), dataset.image_root or "."))
        entry = functools.partial(_remote_entry, fs, root, allow_absolute=dataset.allow_absolute_paths)
    with _text_stream(file, dataset.encoding) as text:
        reader = csv.DictReader(text)
        missing = [c for c in (cols.path, cols.label, *_metadata_columns(dataset)) if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(f"{file.name}: columns {missing} not in header {reader.fieldnames}", key=column_key(dataset, missing[0]))
        for row in reader:
            raw = _manifest_row(row, reader.line_num, file.name, dataset, entry)
            raw.origin = origin
            yield raw


def _manifest_row(row: dict, number: int, manifest: str, dataset: DatasetParams, entry: Callable[..., Raw]) -> Raw:
    """One manifest row as a raw record: its image read by `entry`, with its label (and split);
    a row whose fields no record can hold is refused before its path is used."""
    cols = dataset.columns
    split = row.get(cols.split) if cols.split and dataset.source_split == "keep" else None
    problem = _field_problem(f"{manifest}:{number}", [row.get(cols.path), row.get(cols.label), split])
    if problem:
        return Raw(f"{manifest}:{number}", number, reject=problem[0], detail=problem[1])
    raw = entry(str(row.get(cols.path) or ""), number, manifest)
    raw.label, raw.source_split = row.get(cols.label), split
    if raw.reject is None:
        raw.metadata = metadata_json({name: row.get(name) for name in _metadata_columns(dataset)})
    return raw


def _local_path(location: str) -> Path | None:
    """Where `location` is on this machine (a path, or a file:// URL), or None for a remote URL."""
    if not is_url(location):
        return Path(location)
    if location.startswith("file://"):
        fs, path = _filesystem(location)
        return Path(path)
    return None


def _absolute_entry(file: Path, number: int, where: str) -> Raw:
    """An absolute manifest path the user allowed: read as given, recorded as given."""
    missing = _unusable_file(file)
    raw = Raw(str(file), number, reject="missing_file", detail=f"{where}: {file} {missing}") if missing else \
        _image_file(file, file.name, file.parent.resolve())
    raw.source, raw.source_row = str(file), number
    if raw.detail and not raw.detail.startswith(where):
        raw.detail = f"{where}: {raw.detail}"
    return raw


def _manifest_entry(root: Path, entry: str, number: int, manifest: str, *, allow_absolute: bool = False) -> Raw:
    where = f"{manifest}:{number}"
    if not entry:
        return Raw(f"{manifest}:{number}", number, reject="missing_path", detail=f"{where}: empty path")
    if Path(entry).is_absolute():
        if not allow_absolute:
            return Raw(entry, number, reject="absolute_path", detail=f"{where}: absolute paths are refused (allow_absolute_paths)")
        return _absolute_entry(Path(entry), number, where)
    entry = posixpath.normpath(entry.replace("\\", "/"))
    file = root / entry
    if not _real(file).is_relative_to(root.resolve()):
        return Raw(entry, number, reject="outside_root", detail=f"{where}: {entry} resolves outside the image root")
    missing = _unusable_file(file)
    if missing:
        return Raw(entry, number, reject="missing_file", detail=f"{where}: {entry} {missing}")
    raw = _image_file(file, entry, root.resolve())
    raw.source_row = number
    if raw.detail:
        raw.detail = f"{where}: {raw.detail}"
    return raw


# --- images on an fsspec filesystem ---------------------------------------------------------

def _read_remote_image_folder(url: str, dataset: DatasetParams) -> Iterator[Raw]:
    """An image folder at an fsspec URL, laid out and checked as a local one (object stores have
    no symlinks to follow)."""
    fs, base = _filesystem(url)
    base = base.rstrip("/")
    if not fs.isdir(base):
        raise SourceError(f"{url!r} is not a folder (an image folder is root/{dataset.folder_layout}/<file>)", key="source")
    for path in sorted(p for p in fs.find(base) if p != base):
        rel = path[len(base) + 1 :]
        yield _placed(rel, dataset, functools.partial(_remote_image, fs, path, rel))


def _remote_entry(fs, root: str, entry: str, number: int, manifest: str, *, allow_absolute: bool = False) -> Raw:
    """One manifest entry read from the manifest's filesystem: a path under `root`, never above it."""
    where = f"{manifest}:{number}"
    if not entry:
        return Raw(f"{manifest}:{number}", number, reject="missing_path", detail=f"{where}: empty path")
    entry = entry.replace("\\", "/")
    if entry.startswith("/") or is_url(entry):
        if not allow_absolute:
            return Raw(entry, number, reject="absolute_path", detail=f"{where}: absolute paths are refused (allow_absolute_paths)")
        where_fs, path = _filesystem(entry) if is_url(entry) else (fs, posixpath.normpath(entry))
        raw = _remote_image(where_fs, path, entry)
    else:
        entry = posixpath.normpath(entry)
        if entry == ".." or entry.startswith("../"):
            return Raw(entry, number, reject="outside_root", detail=f"{where}: {entry} resolves outside the image root")
        raw = _remote_image(fs, f"{root}/{entry}", entry)
    raw.source_row = number
    if raw.detail:
        raw.detail = f"{where}: {raw.detail}"
    return raw


def _remote_image(fs, path: str, rel: str) -> Raw:
    """Bytes of one image file on `fs`, or a rejection (hidden, not an image, missing)."""
    if _hidden(rel):
        return Raw(rel, None, reject="hidden_file", detail=f"{rel}: hidden file or folder")
    suffix = posixpath.splitext(rel)[1]
    if suffix.lower() not in IMAGE_EXTENSIONS:
        return Raw(rel, None, reject="not_an_image_file", detail=f"{rel}: extension {suffix or '(none)'!r}")
    try:
        return Raw(rel, None, image=fs.cat_file(path))
    except (FileNotFoundError, IsADirectoryError):
        return Raw(rel, None, reject="missing_file", detail=f"{rel}: not found")
