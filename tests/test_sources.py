"""Readers of the input formats: every row or file is a raw record or a rejection with a reason."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.errors import SourceError
from pipeline.params import DatasetParams
from pipeline.sources import RAW_COLUMNS, read_source


def dataset(source: str, fmt: str, **options) -> DatasetParams:
    """Dataset params for a source under the test's root."""
    modality = "image" if fmt.startswith("image") else "text"
    return DatasetParams.model_validate({"modality": modality, "source": source, "format": fmt, **options})


def png(color: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (20, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def accepted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["reject"].isna()].reset_index(drop=True)


def rejection(frame: pd.DataFrame, reason: str) -> pd.Series:
    """The one row rejected for `reason`."""
    rows = frame[frame["reject"] == reason]
    assert len(rows) == 1, f"expected one {reason!r} row, got:\n{frame[['source', 'reject', 'detail']]}"
    return rows.iloc[0]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every regular file under `root` (symlinks not followed)."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --- delimited text -------------------------------------------------------------------------

def test_csv_quoted_fields_keep_embedded_newlines_and_commas(tmp_path):
    """A quoted CSV field may hold commas, quotes and line breaks; line numbers count physical lines."""
    (tmp_path / "corpus.csv").write_text(
        'text,label\n"first, with comma",a\n"two\nlines",b\n"say ""hi""",c\n', encoding="utf-8", newline=""
    )
    frame = read_source(dataset("corpus.csv", "csv"), tmp_path)
    assert list(frame.columns) == RAW_COLUMNS
    assert frame["text"].tolist() == ["first, with comma", "two\nlines", 'say "hi"']
    assert frame["label"].tolist() == ["a", "b", "c"]
    assert frame["source"].tolist() == ["corpus.csv"] * 3
    assert frame["source_row"].tolist() == [2, 3, 5]
    assert frame["reject"].isna().all()


def test_tsv_has_no_quoting(tmp_path):
    """In TSV a double quote is an ordinary character: it stays in the field, it does not quote."""
    (tmp_path / "corpus.tsv").write_text('text\tlabel\nshe said "hi\ta\n"quoted"\tb\n', encoding="utf-8")
    frame = read_source(dataset("corpus.tsv", "tsv"), tmp_path)
    assert frame["text"].tolist() == ['she said "hi', '"quoted"']
    assert frame["label"].tolist() == ["a", "b"]
    assert frame["reject"].isna().all()


@pytest.mark.parametrize("fmt, sep", [("csv", ","), ("tsv", "\t")])
def test_headerless_columns_are_named_by_position(tmp_path, fmt, sep):
    """Without a header the first line is data and columns are '0', '1', ..."""
    (tmp_path / f"c.{fmt}").write_text(f"billing{sep}my invoice\nshipping{sep}where is it\n", encoding="utf-8")
    ds = dataset(f"c.{fmt}", fmt, header=False, columns={"label": "0", "text": "1"})
    frame = read_source(ds, tmp_path)
    assert frame["label"].tolist() == ["billing", "shipping"]
    assert frame["text"].tolist() == ["my invoice", "where is it"]
    assert frame["source_row"].tolist() == [1, 2]


def test_headerless_with_named_columns_says_columns_are_positional(tmp_path):
    (tmp_path / "c.csv").write_text("billing,my invoice\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"c\.csv.*'text'.*named by position"):
        read_source(dataset("c.csv", "csv", header=False), tmp_path)


def test_blank_lines_hold_no_record(tmp_path):
    (tmp_path / "c.csv").write_text("text,label\nhello,a\n\nworld,b\n", encoding="utf-8")
    frame = read_source(dataset("c.csv", "csv"), tmp_path)
    assert frame["text"].tolist() == ["hello", "world"]
    assert frame["source_row"].tolist() == [2, 4]


def test_split_column_is_kept_only_when_asked(tmp_path):
    (tmp_path / "c.csv").write_text("text,label,part\nhello,a,train\nworld,b,test\n", encoding="utf-8")
    kept = read_source(dataset("c.csv", "csv", columns={"split": "part"}, source_split="keep"), tmp_path)
    ignored = read_source(dataset("c.csv", "csv", columns={"split": "part"}), tmp_path)
    assert kept["source_split"].tolist() == ["train", "test"]
    assert ignored["source_split"].isna().all()


@pytest.mark.parametrize("line", ["too,many,fields,here", "lonely"])
def test_ragged_row_is_rejected_with_file_and_line(tmp_path, line):
    (tmp_path / "c.csv").write_text(f"text,label\nfine,a\n{line}\nalso fine,b\n", encoding="utf-8")
    frame = read_source(dataset("c.csv", "csv"), tmp_path)
    row = rejection(frame, "ragged_row")
    assert row["source_row"] == 3
    assert row["detail"].startswith("c.csv:3:")
    assert accepted(frame)["text"].tolist() == ["fine", "also fine"]


def test_unclosed_quote_swallowing_the_file_is_one_rejected_row(tmp_path):
    """An unclosed quote turns the rest of the file into one field: one ragged row, not a crash."""
    (tmp_path / "c.csv").write_text('text,label\nok,a\n"' + "x" * 200_000 + ",b\n", encoding="utf-8")
    frame = read_source(dataset("c.csv", "csv"), tmp_path)
    row = rejection(frame, "ragged_row")
    assert row["detail"].startswith("c.csv:3:")
    assert accepted(frame)["text"].tolist() == ["ok"]


@pytest.mark.parametrize("fmt, encoding, raw", [
    ("csv", "utf-8", b"caf\xe9"),  # latin-1 byte in a UTF-8 file
    ("tsv", "utf-8", b"\xff\xfe oops"),
    ("csv", "cp1252", b"bad \x81 byte"),  # 0x81 is undefined in cp1252
    ("jsonl", "utf-8", b"caf\xe9"),
])
def test_bytes_invalid_in_declared_encoding_are_rejected(tmp_path, fmt, encoding, raw):
    name = f"c.{fmt}"
    if fmt == "jsonl":
        data = b'{"text": "fine", "label": "a"}\n{"text": "' + raw + b'", "label": "b"}\n'
    else:
        sep = b"," if fmt == "csv" else b"\t"
        data = b"text" + sep + b"label\nfine" + sep + b"a\n" + raw + sep + b"b\n"
    (tmp_path / name).write_bytes(data)
    frame = read_source(dataset(name, fmt, encoding=encoding), tmp_path)
    row = rejection(frame, "invalid_encoding")
    line = 2 if fmt == "jsonl" else 3  # delimited files have a header line
    assert row["detail"].startswith(f"{name}:{line}:")
    assert row["source_row"] == line
    assert accepted(frame)["text"].tolist() == ["fine"]


def test_declared_encoding_is_used(tmp_path):
    """A cp1252 file's 0x92 byte is a right single quote, not a rejection."""
    (tmp_path / "c.csv").write_bytes(b"text,label\nthat\x92s it,a\n")
    frame = read_source(dataset("c.csv", "csv", encoding="cp1252"), tmp_path)
    assert frame["text"].tolist() == ["that\u2019s it"]
    assert frame["reject"].isna().all()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_nul_byte_is_rejected(tmp_path, fmt):
    name = f"c.{fmt}"
    if fmt == "jsonl":
        data = '{"text": "fine", "label": "a"}\n{"text": "ab\\u0000c", "label": "b"}\n'
    else:
        sep = "," if fmt == "csv" else "\t"
        data = f"text{sep}label\nfine{sep}a\nab\x00c{sep}b\n"
    (tmp_path / name).write_text(data, encoding="utf-8")
    frame = read_source(dataset(name, fmt), tmp_path)
    row = rejection(frame, "nul_byte")
    line = 2 if fmt == "jsonl" else 3
    assert row["detail"].startswith(f"{name}:{line}:")
    assert accepted(frame)["text"].tolist() == ["fine"]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_utf8_bom_is_stripped(tmp_path, fmt):
    """A BOM must not end up in the first column name or the first text."""
    name = f"c.{fmt}"
    if fmt == "jsonl":
        data = '{"text": "hello", "label": "a"}\n'
    else:
        sep = "," if fmt == "csv" else "\t"
        data = f"text{sep}label\nhello{sep}a\n"
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + data.encode("utf-8"))
    frame = read_source(dataset(name, fmt), tmp_path)
    assert frame["text"].tolist() == ["hello"]
    assert frame["reject"].isna().all()


def test_headerless_bom_does_not_reach_the_first_field(tmp_path):
    (tmp_path / "c.tsv").write_bytes(b"\xef\xbb\xbfa\thello\n")
    frame = read_source(dataset("c.tsv", "tsv", header=False, columns={"label": "0", "text": "1"}), tmp_path)
    assert frame["label"].tolist() == ["a"]


def test_missing_column_raises_source_error(tmp_path):
    (tmp_path / "c.csv").write_text("body,label\nhello,a\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"c\.csv.*'text'.*body"):
        read_source(dataset("c.csv", "csv"), tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "image_folder", "image_manifest"])
def test_missing_source_raises_source_error(tmp_path, fmt):
    with pytest.raises(SourceError, match=r"'nope/x' does not exist"):
        read_source(dataset("nope/x", fmt), tmp_path)


# --- jsonl ----------------------------------------------------------------------------------

def test_jsonl_reads_objects_and_stringifies_labels(tmp_path):
    lines = [{"text": "hello", "label": "a"}, {"text": "world", "label": 2, "extra": [1]}, {"label": "c"}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(o) for o in lines) + "\n\n", encoding="utf-8")
    frame = read_source(dataset("c.jsonl", "jsonl"), tmp_path)
    assert frame["label"].tolist() == ["a", "2", "c"]
    assert frame["text"].tolist()[:2] == ["hello", "world"]
    assert pd.isna(frame["text"][2])  # a missing key is a missing text, left to clean to judge
    assert frame["source_row"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("bad, hint", [("{not json", ""), ('["a", "list"]', "not a JSON object"), ("42", "not a JSON object")])
def test_jsonl_malformed_or_non_object_line_is_rejected(tmp_path, bad, hint):
    (tmp_path / "c.jsonl").write_text(f'{{"text": "ok", "label": "a"}}\n{bad}\n{{"text": "ok2", "label": "b"}}\n', encoding="utf-8")
    frame = read_source(dataset("c.jsonl", "jsonl"), tmp_path)
    row = rejection(frame, "malformed_json")
    assert row["detail"].startswith("c.jsonl:2:")
    assert hint in row["detail"]
    assert accepted(frame)["text"].tolist() == ["ok", "ok2"]


@pytest.mark.parametrize("bad, hint", [
    ('{"text": "x", "label": ' + "9" * 5_000 + "}", "integer string conversion"),  # Python's int() digit limit
    ("[" * 100_000, "recursion"),  # nesting deeper than the recursion limit
])
def test_jsonl_line_json_cannot_parse_is_rejected(tmp_path, bad, hint):
    """json.loads raises ValueError and RecursionError besides JSONDecodeError (found by
    tests/test_properties.py): the line is malformed_json, not a traceback."""
    (tmp_path / "c.jsonl").write_text(f'{bad}\n{{"text": "ok", "label": "a"}}\n', encoding="utf-8")
    frame = read_source(dataset("c.jsonl", "jsonl"), tmp_path)
    row = rejection(frame, "malformed_json")
    assert row["detail"].startswith("c.jsonl:1:") and hint in row["detail"]
    assert accepted(frame)["text"].tolist() == ["ok"]


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_jsonl_line_separator_inside_a_string_is_text(tmp_path, separator):
    """json.dumps(ensure_ascii=False) writes U+2028/U+0085 raw; JSON Lines records end only at '\\n'."""
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"text": f"a{separator}b", "label": "x"}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    frame = read_source(dataset("c.jsonl", "jsonl"), tmp_path)
    assert frame["text"].tolist() == [f"a{separator}b"]
    assert frame["reject"].isna().all()


# --- parquet --------------------------------------------------------------------------------

def test_parquet_file(tmp_path):
    pq.write_table(pa.table({"text": ["hello", None], "label": ["a", "b"], "other": [1, 2]}), tmp_path / "c.parquet")
    frame = read_source(dataset("c.parquet", "parquet"), tmp_path)
    assert frame["text"].tolist()[0] == "hello"
    assert pd.isna(frame["text"][1])
    assert frame["label"].tolist() == ["a", "b"]
    assert frame["source_row"].tolist() == [1, 2]


def test_parquet_folder_reads_files_in_name_order(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["second"], "label": ["b"]}), folder / "part-1.parquet")
    pq.write_table(pa.table({"text": ["first", "again"], "label": ["a", "a"]}), folder / "part-0.parquet")
    (folder / "README.txt").write_text("not data")
    frame = read_source(dataset("shards", "parquet"), tmp_path)
    assert frame["text"].tolist() == ["first", "again", "second"]
    assert frame["source"].tolist() == ["part-0.parquet", "part-0.parquet", "part-1.parquet"]
    assert frame["id"].is_unique


def test_parquet_missing_column_raises_source_error(tmp_path):
    pq.write_table(pa.table({"body": ["x"], "label": ["a"]}), tmp_path / "c.parquet")
    with pytest.raises(SourceError, match=r"c\.parquet.*'text'"):
        read_source(dataset("c.parquet", "parquet"), tmp_path)


def test_parquet_nul_byte_is_rejected(tmp_path):
    pq.write_table(pa.table({"text": ["ok", "a\x00b"], "label": ["a", "b"]}), tmp_path / "c.parquet")
    row = rejection(read_source(dataset("c.parquet", "parquet"), tmp_path), "nul_byte")
    assert row["detail"].startswith("c.parquet:2:")


# --- image folder ---------------------------------------------------------------------------

def test_image_folder_label_layout(tmp_path):
    for rel in ["imgs/cat/a.png", "imgs/cat/b.PNG", "imgs/dog/c.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(png())
    frame = read_source(dataset("imgs", "image_folder"), tmp_path)
    assert frame["source"].tolist() == ["cat/a.png", "cat/b.PNG", "dog/c.png"]
    assert frame["label"].tolist() == ["cat", "cat", "dog"]
    assert frame["image"].tolist() == [png()] * 3
    assert frame["reject"].isna().all()
    assert frame["source_row"].isna().all()


@pytest.mark.parametrize("source_split, expected", [("keep", ["test", "train"]), ("ignore", [None, None])])
def test_image_folder_split_label_layout(tmp_path, source_split, expected):
    for rel in ["imgs/train/cat/a.png", "imgs/test/dog/b.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(png())
    frame = read_source(dataset("imgs", "image_folder", folder_layout="split/label", source_split=source_split), tmp_path)
    assert frame["label"].tolist() == ["dog", "cat"]
    assert [None if pd.isna(s) else s for s in frame["source_split"]] == expected


@pytest.mark.parametrize("layout, rel", [
    ("label", "stray.png"),
    ("label", "cat/sub/deep.png"),
    ("split/label", "train/flat.png"),
])
def test_image_folder_file_in_wrong_place_is_unexpected_location(tmp_path, layout, rel):
    (tmp_path / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "imgs" / rel).write_bytes(png())
    row = rejection(read_source(dataset("imgs", "image_folder", folder_layout=layout), tmp_path), "unexpected_location")
    assert row["source"] == rel
    assert row["detail"].startswith(f"{rel}:")
    assert layout in row["detail"]


@pytest.mark.parametrize("rel", ["cat/.hidden.png", ".cache/x.png", "cat/.ipynb_checkpoints/x.png"])
def test_image_folder_hidden_file_is_rejected(tmp_path, rel):
    (tmp_path / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "imgs" / rel).write_bytes(png())
    row = rejection(read_source(dataset("imgs", "image_folder"), tmp_path), "hidden_file")
    assert row["detail"].startswith(f"{rel}:")


@pytest.mark.parametrize("name", ["notes.txt", "README", "a.svg"])
def test_image_folder_non_image_extension_is_rejected(tmp_path, name):
    (tmp_path / "imgs/cat").mkdir(parents=True)
    (tmp_path / "imgs/cat" / name).write_text("hello")
    row = rejection(read_source(dataset("imgs", "image_folder"), tmp_path), "not_an_image_file")
    assert row["detail"].startswith(f"cat/{name}:")
    assert pd.isna(row["image"])


def test_image_folder_symlink_out_of_root_is_outside_root(tmp_path):
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret/x.png").write_bytes(png())
    (tmp_path / "imgs/cat").mkdir(parents=True)
    (tmp_path / "imgs/cat/x.png").symlink_to(tmp_path / "secret/x.png")
    row = rejection(read_source(dataset("imgs", "image_folder"), tmp_path), "outside_root")
    assert row["detail"].startswith("cat/x.png:")
    assert pd.isna(row["image"])


def test_image_folder_symlinked_folder_out_of_root_is_not_skipped_silently(tmp_path):
    """A link to a folder outside the root is one rejection naming the link; nothing behind it is read."""
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret/x.png").write_bytes(png())
    (tmp_path / "imgs/cat").mkdir(parents=True)
    (tmp_path / "imgs/cat/a.png").write_bytes(png())
    (tmp_path / "imgs/dog").symlink_to(tmp_path / "secret", target_is_directory=True)
    frame = read_source(dataset("imgs", "image_folder"), tmp_path)
    row = rejection(frame, "outside_root")
    assert row["source"] == "dog"
    assert "not followed" in row["detail"]
    assert not frame["source"].str.contains("x.png").any()


def test_image_folder_dangling_symlink_is_a_rejection(tmp_path):
    (tmp_path / "imgs/cat").mkdir(parents=True)
    (tmp_path / "imgs/cat/a.png").write_bytes(png())
    (tmp_path / "imgs/cat/gone.png").symlink_to("missing.png")
    frame = read_source(dataset("imgs", "image_folder"), tmp_path)
    row = frame[frame["source"] == "cat/gone.png"].iloc[0]
    assert not pd.isna(row["reject"])
    assert row["detail"].startswith("cat/gone.png:")


# --- image manifest -------------------------------------------------------------------------

def make_manifest(tmp_path: Path, entries: list[tuple[str, str]], *, image_root: str | None = "images") -> DatasetParams:
    """A manifest.csv in tmp_path listing (path, label) rows; images/cat/a.png and images/notes.txt exist."""
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True, exist_ok=True)
    (images / "a.png").write_bytes(png())
    (tmp_path / "images" / "notes.txt").write_text("hello")
    lines = ["path,label"] + [f"{p},{label}" for p, label in entries]
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dataset("manifest.csv", "image_manifest", image_root=image_root)


def test_image_manifest_paths_are_relative_to_image_root(tmp_path):
    frame = read_source(make_manifest(tmp_path, [("cat/a.png", "cat")]), tmp_path)
    assert frame["reject"].isna().all()
    assert frame["source"].tolist() == ["cat/a.png"]
    assert frame["label"].tolist() == ["cat"]
    assert frame["image"].tolist() == [png()]
    assert frame["source_row"].tolist() == [2]


def test_image_manifest_default_root_is_its_folder(tmp_path):
    frame = read_source(make_manifest(tmp_path, [("images/cat/a.png", "cat")], image_root=None), tmp_path)
    assert frame["reject"].isna().all()
    assert frame["image"].tolist() == [png()]


def test_image_manifest_split_column(tmp_path):
    make_manifest(tmp_path, [])
    (tmp_path / "manifest.csv").write_text("path,label,part\ncat/a.png,cat,val\n")
    ds = dataset("manifest.csv", "image_manifest", image_root="images", columns={"split": "part"}, source_split="keep")
    assert read_source(ds, tmp_path)["source_split"].tolist() == ["val"]


@pytest.mark.parametrize("entry, reason", [
    ("/etc/passwd", "absolute_path"),
    ("../x.png", "outside_root"),
    ("cat/../../x.png", "outside_root"),
    ("cat/missing.png", "missing_file"),
    ("", "missing_path"),
    ("notes.txt", "not_an_image_file"),
    (".hidden.png", "hidden_file"),
])
def test_image_manifest_rejections_name_manifest_and_line(tmp_path, entry, reason):
    (tmp_path / "x.png").write_bytes(png())  # exists, but outside the image root
    (tmp_path / "images" / ".hidden.png").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / ".hidden.png").write_bytes(png())
    frame = read_source(make_manifest(tmp_path, [("cat/a.png", "cat"), (entry, "cat")]), tmp_path)
    row = rejection(frame, reason)
    assert row["detail"].startswith("manifest.csv:3:")
    assert row["source_row"] == 3
    assert pd.isna(row["image"])
    assert accepted(frame)["source"].tolist() == ["cat/a.png"]


def test_image_manifest_symlink_out_of_root_is_outside_root(tmp_path):
    ds = make_manifest(tmp_path, [("cat/link.png", "cat")])
    (tmp_path / "x.png").write_bytes(png())
    (tmp_path / "images/cat/link.png").symlink_to(tmp_path / "x.png")
    row = rejection(read_source(ds, tmp_path), "outside_root")
    assert row["detail"].startswith("manifest.csv:2:")


def test_image_manifest_dot_slash_prefix_is_not_hidden(tmp_path):
    frame = read_source(make_manifest(tmp_path, [("./cat/a.png", "cat")]), tmp_path)
    assert frame["reject"].isna().all()
    assert frame["image"].tolist() == [png()]


def test_image_manifest_missing_column_raises_source_error(tmp_path):
    ds = make_manifest(tmp_path, [])
    (tmp_path / "manifest.csv").write_text("file,label\ncat/a.png,cat\n")
    with pytest.raises(SourceError, match=r"manifest\.csv.*'path'"):
        read_source(ds, tmp_path)


# --- several files: globs, lists, split mappings, fsspec URLs --------------------------------

def write_csvs(folder: Path, files: dict[str, list[tuple[str, str]]]) -> None:
    for name, rows in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows), encoding="utf-8")


def test_a_split_mapping_gives_each_file_its_split(tmp_path):
    """The train.csv + test.csv of a public corpus, read as they ship, with their split kept."""
    write_csvs(tmp_path / "corpus", {"train.csv": [("a", "x"), ("b", "y")], "test.csv": [("c", "x")]})
    ds = dataset("corpus", "csv", files={"train": "train.csv", "test": "test.csv"}, source_split="keep")
    frame = read_source(ds, tmp_path)
    assert frame[["source", "source_row", "text", "source_split"]].values.tolist() == [
        ["train.csv", 2, "a", "train"], ["train.csv", 3, "b", "train"], ["test.csv", 2, "c", "test"]]
    assert frame["id"].is_unique


def test_a_split_mapping_is_only_files_when_the_split_is_ignored(tmp_path):
    write_csvs(tmp_path / "corpus", {"train.csv": [("a", "x")], "test.csv": [("c", "x")]})
    ds = dataset("corpus", "csv", files={"train": "train.csv", "test": "test.csv"})
    assert read_source(ds, tmp_path)["source_split"].isna().all()


def test_a_glob_reads_its_files_in_name_order_and_ids_tell_same_names_apart(tmp_path):
    write_csvs(tmp_path / "corpus", {"2024/part-1.csv": [("late", "x")], "2023/part-1.csv": [("early", "x")],
                                     "2023/part-0.csv": [("first", "y")], "notes.txt": [("no", "x")]})
    frame = read_source(dataset("corpus", "csv", files="*/part-*.csv"), tmp_path)
    assert frame[["source", "text"]].values.tolist() == [
        ["2023/part-0.csv", "first"], ["2023/part-1.csv", "early"], ["2024/part-1.csv", "late"]]
    assert frame["id"].is_unique  # same file name and row in two folders, two records


def test_a_list_of_files_and_globs_reads_in_the_order_given(tmp_path):
    write_csvs(tmp_path / "c", {"b.csv": [("b", "x")], "a1.csv": [("a1", "x")], "a2.csv": [("a2", "y")]})
    frame = read_source(dataset("c", "csv", files=["b.csv", "a*.csv"]), tmp_path)
    assert frame["text"].tolist() == ["b", "a1", "a2"]


@pytest.mark.parametrize("files, message", [
    (["a.csv", "*.csv"], "a.csv is picked by both 'a.csv' and '*.csv'"),
    ({"train": "a.csv", "test": "a.csv"}, "a.csv is picked by both"),
    ("*.jsonl", "'*.jsonl' matches no file in c"),
    ("missing.csv", "'missing.csv' matches no file in c"),
])
def test_a_file_picked_twice_or_a_pattern_matching_nothing_stops_the_read(tmp_path, files, message):
    write_csvs(tmp_path / "c", {"a.csv": [("a", "x")]})
    with pytest.raises(SourceError, match=re.escape(message)):
        read_source(dataset("c", "csv", files=files), tmp_path)


def test_files_need_a_source_folder_and_a_folder_needs_files(tmp_path):
    write_csvs(tmp_path, {"a.csv": [("a", "x")]})
    with pytest.raises(SourceError, match="must be the folder its `files` are in"):
        read_source(dataset("a.csv", "csv", files="*.csv"), tmp_path)
    with pytest.raises(SourceError, match="is a folder; name its files with `files`"):
        read_source(dataset(".", "csv"), tmp_path)


def test_a_picked_file_linking_out_of_the_source_folder_is_refused(tmp_path):
    write_csvs(tmp_path, {"secret.csv": [("s", "x")], "c/a.csv": [("a", "x")]})
    os.symlink(tmp_path / "secret.csv", tmp_path / "c" / "b.csv")
    with pytest.raises(SourceError, match="b.csv resolves outside c"):
        read_source(dataset("c", "csv", files="*.csv"), tmp_path)


def test_each_file_is_decoded_in_its_own_detected_encoding(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.csv").write_bytes("text,label\ncafé crème,x\n".encode("utf-8"))
    (tmp_path / "c" / "b.csv").write_bytes("text,label\nnaïve façade,y\n".encode("utf-16"))  # with its BOM
    frame = read_source(dataset("c", "csv", files="*.csv", encoding="auto"), tmp_path)
    assert frame["text"].tolist() == ["café crème", "naïve façade"]
    assert frame.attrs["encoding"] == "utf-8 (a.csv), utf-16 (b.csv)"


def test_parquet_and_jsonl_files_by_split(tmp_path):
    (tmp_path / "c").mkdir()
    pq.write_table(pa.table({"text": ["p"], "label": ["x"]}), tmp_path / "c" / "train.parquet")
    (tmp_path / "c" / "dev.jsonl").write_text(json.dumps({"text": "j", "label": "y"}) + "\n")
    train = read_source(dataset("c", "parquet", files={"train": "*.parquet"}, source_split="keep"), tmp_path)
    dev = read_source(dataset("c", "jsonl", files={"dev": "dev.jsonl"}, source_split="keep"), tmp_path)
    assert train[["text", "source_split"]].values.tolist() == [["p", "train"]]
    assert dev[["text", "source", "source_split"]].values.tolist() == [["j", "dev.jsonl", "dev"]]


def test_an_fsspec_url_reads_like_a_folder(tmp_path):
    """fsspec's in-memory filesystem stands for s3:// or gs://: the same code path, no network."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/corpus-test/train/part-0.csv": b"text,label\nfrom memory,x\n", "/corpus-test/test.csv": b"text,label\nheld out,y\n"})
    try:
        ds = dataset("memory://corpus-test", "csv", files={"train": "train/*.csv", "test": "test.csv"}, source_split="keep")
        frame = read_source(ds, tmp_path)
        assert frame[["source", "text", "source_split"]].values.tolist() == [
            ["train/part-0.csv", "from memory", "train"], ["test.csv", "held out", "test"]]
        alone = read_source(dataset("memory://corpus-test/test.csv", "csv"), tmp_path)
        assert alone[["source", "text"]].values.tolist() == [["test.csv", "held out"]]
    finally:
        fs.rm("/corpus-test", recursive=True)


def test_image_manifests_by_split_read_each_beside_itself_with_ids_apart(tmp_path):
    """A corpus shipped as train/ and test/ folders, each with its manifest: `files` maps the
    splits to them; the same entry on the same line of two manifests is two records."""
    for split, colour in (("train", (200, 10, 10)), ("test", (10, 200, 10))):
        (tmp_path / "corpus" / split / "cat").mkdir(parents=True)
        (tmp_path / "corpus" / split / "cat" / "a.png").write_bytes(png(colour))
        (tmp_path / "corpus" / split / "manifest.csv").write_text("path,label\ncat/a.png,cat\n../../x.png,cat\n")
    (tmp_path / "x.png").write_bytes(png())
    ds = dataset("corpus", "image_manifest", files={"train": "train/manifest.csv", "test": "test/manifest.csv"},
                 source_split="keep")
    frame = read_source(ds, tmp_path)
    kept = accepted(frame)
    assert kept[["source", "source_row", "source_split"]].values.tolist() == [["cat/a.png", 2, "train"], ["cat/a.png", 2, "test"]]
    assert kept["image"].tolist() == [png((200, 10, 10)), png((10, 200, 10))]
    assert kept["id"].nunique() == 2
    assert frame.loc[frame["reject"] == "outside_root", "detail"].str.startswith(("train/manifest.csv:3:", "test/manifest.csv:3:")).all()
    single = read_source(dataset("corpus/train/manifest.csv", "image_manifest"), tmp_path)
    assert accepted(single)["id"].tolist() != kept["id"].tolist()[:1]  # ids name the manifest only among several


def test_an_image_manifest_at_a_url_reads_its_images_from_beside_it(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/images-test/manifest.csv": b"path,label\ncat/a.png,cat\n../secret.png,cat\n/abs.png,cat\ncat/gone.png,cat\n",
             "/images-test/cat/a.png": png(), "/secret.png": png(), "/abs.png": png()})
    try:
        frame = read_source(dataset("memory://images-test/manifest.csv", "image_manifest"), tmp_path)
        assert accepted(frame)[["source", "label", "image"]].values.tolist() == [["cat/a.png", "cat", png()]]
        assert frame["reject"].dropna().tolist() == ["outside_root", "absolute_path", "missing_file"]
        assert frame["detail"].dropna().str.startswith(("manifest.csv:3:", "manifest.csv:4:", "manifest.csv:5:")).all()
        allowed = read_source(dataset("memory://images-test/manifest.csv", "image_manifest", allow_absolute_paths=True), tmp_path)
        assert accepted(allowed)["source"].tolist() == ["cat/a.png", "/abs.png"]
    finally:
        for path in ("/images-test", "/secret.png", "/abs.png"):
            fs.rm(path, recursive=True)


def test_an_image_folder_at_a_url_reads_like_a_local_one(tmp_path):
    import fsspec

    files = {"cat/a.png": png(), "dog/b.png": png((1, 2, 3)), "dog/.c.png": png(), "stray.png": png(), "dog/notes.txt": b"x"}
    local = tmp_path / "local"
    for name, data in files.items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)
    fs = fsspec.filesystem("memory")
    fs.pipe({f"/folder-test/{name}": data for name, data in files.items()})
    try:
        remote = read_source(dataset("memory://folder-test", "image_folder"), tmp_path)
        here = read_source(dataset("local", "image_folder"), tmp_path)
        assert remote.drop(columns="detail").equals(here.drop(columns="detail"))
        assert sorted(remote["reject"].dropna()) == ["hidden_file", "not_an_image_file", "unexpected_location"]
        with pytest.raises(SourceError, match="not a folder"):
            read_source(dataset("memory://folder-test/cat/a.png", "image_folder"), tmp_path)
    finally:
        fs.rm("/folder-test", recursive=True)


def test_a_url_whose_filesystem_package_is_missing_says_so(tmp_path):
    pytest.importorskip("fsspec")
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here")
    with pytest.raises(SourceError, match="cannot open gs://bucket/corpus.*gcsfs"):
        read_source(dataset("gs://bucket/corpus", "csv", files="*.csv"), tmp_path)


# --- ids and read-only ----------------------------------------------------------------------

def write_every_format(root: Path) -> list[DatasetParams]:
    """One small source of each format under `root`, and their dataset params."""
    (root / "c.csv").write_text("text,label\nhello,a\nhello,a\nworld,b\n", encoding="utf-8")
    (root / "c.tsv").write_text("text\tlabel\nhello\ta\nworld\tb\n", encoding="utf-8")
    (root / "c.jsonl").write_text('{"text": "hello", "label": "a"}\n{"text": "world", "label": "b"}\n', encoding="utf-8")
    pq.write_table(pa.table({"text": ["hello", "world"], "label": ["a", "b"]}), root / "c.parquet")
    for rel in ["imgs/cat/a.png", "imgs/dog/b.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png())
    (root / "manifest.csv").write_text("path,label\nimgs/cat/a.png,cat\nimgs/dog/b.png,dog\n", encoding="utf-8")
    return [
        dataset("c.csv", "csv"), dataset("c.tsv", "tsv"), dataset("c.jsonl", "jsonl"), dataset("c.parquet", "parquet"),
        dataset("imgs", "image_folder"), dataset("manifest.csv", "image_manifest"),
    ]


def test_ids_are_stable_across_reads_and_places_and_differ_between_rows(tmp_path):
    """Ids depend on file and row only: equal texts in two rows differ, a copied tree keeps them."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    datasets = write_every_format(first)
    shutil.copytree(first, second)
    for ds in datasets:
        ids = read_source(ds, first)["id"].tolist()
        assert ids == read_source(ds, first)["id"].tolist(), ds.format
        assert ids == read_source(ds, second)["id"].tolist(), ds.format
        assert len(set(ids)) == len(ids) >= 2, ds.format


def test_source_files_are_not_modified(tmp_path):
    datasets = write_every_format(tmp_path)
    past = 1_000_000_000
    for file in tmp_path.rglob("*"):
        os.utime(file, ns=(past * 10**9, past * 10**9))
    before, listing = snapshot(tmp_path), sorted(tmp_path.rglob("*"))
    for ds in datasets:
        read_source(ds, tmp_path)
    assert snapshot(tmp_path) == before
    assert sorted(tmp_path.rglob("*")) == listing  # nothing written beside the sources either


def test_manifest_absolute_path_read_only_when_allowed(tmp_path):
    """An absolute manifest path is refused by default and read as given when the user allows it."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.png").write_bytes(png())
    target = (tmp_path / "elsewhere" / "a.png").resolve()
    (tmp_path / "m.csv").write_text(f"path,label\n{target},cat\n")
    refused = read_source(dataset("m.csv", "image_manifest"), tmp_path)
    assert refused["reject"].tolist() == ["absolute_path"]
    allowed = read_source(dataset("m.csv", "image_manifest", allow_absolute_paths=True), tmp_path)
    assert allowed["reject"].isna().all() and allowed["source"].tolist() == [str(target)]
    assert allowed["image"].iloc[0] == png()


# --- streaming ------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    "text,label\ncafé,x\n".encode("utf-8"), "text,label\ncafé,x\n".encode("utf-8-sig"), "text,label\ncafé,x\n".encode("utf-16"),
    "text,label\n" .encode() + "é".encode("utf-8") * 20 + b"\n",  # a two-byte character across every block edge
    b"text,label\n" + b"a" * 40 + "café crème brûlée à la carte, déjà vu".encode("cp1252") + b",x\n",  # invalid UTF-8 after the first block
])
def test_encoding_detected_block_by_block_is_the_whole_file_answer(tmp_path, monkeypatch, data):
    from pipeline import sources

    monkeypatch.setattr(sources, "DETECT_BLOCK", 7)
    (tmp_path / "c.csv").write_bytes(data)
    assert sources.detect_file_encoding(sources.SourceFile(str(tmp_path / "c.csv"), "c.csv")) == sources.detect_encoding(data)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_a_text_file_is_read_as_it_arrives_not_all_at_once(tmp_path, fmt):
    """The first chunk comes out of a named pipe whose writer has not finished: nothing waits for the whole file."""
    import threading

    from pipeline.sources import source_chunks

    sep = "\t" if fmt == "tsv" else ","
    line = (lambda i: json.dumps({"text": f"row {i}", "label": "a"}) + "\n") if fmt == "jsonl" else (lambda i: f"row {i}{sep}a\n")
    pipe = tmp_path / f"c.{fmt}"
    os.mkfifo(pipe)
    first_read, finished = threading.Event(), threading.Event()

    def write() -> None:
        with open(pipe, "w", encoding="utf-8") as out:
            out.write("" if fmt == "jsonl" else f"text{sep}label\n")
            out.writelines(line(i) for i in range(5_000))
            out.flush()
            first_read.wait(timeout=30)
            out.writelines(line(i) for i in range(5_000, 6_000))
        finished.set()

    writer = threading.Thread(target=write)
    writer.start()
    chunks = source_chunks(dataset(pipe.name, fmt, encoding="utf-8"), tmp_path, rows=10)
    first = next(chunks)
    still_writing = not finished.is_set()
    first_read.set()
    rest = list(chunks)
    writer.join()
    assert still_writing and first["text"].tolist() == [f"row {i}" for i in range(10)]
    assert sum(map(len, rest)) == 5_990 and rest[-1]["source_row"].iloc[-1] == (6_000 if fmt == "jsonl" else 6_001)


def test_a_parquet_file_is_read_in_batches_with_rows_numbered_across_them(tmp_path, monkeypatch):
    from pipeline import sources

    pq.write_table(pa.table({"text": [f"t{i}" for i in range(25)], "label": ["a"] * 25}), tmp_path / "c.parquet", row_group_size=4)
    whole = read_source(dataset("c.parquet", "parquet"), tmp_path)
    monkeypatch.setattr(sources, "PARQUET_BATCH", 3)
    batched = read_source(dataset("c.parquet", "parquet"), tmp_path)
    pd.testing.assert_frame_equal(whole, batched)
    assert batched["source_row"].tolist() == list(range(1, 26))


def test_an_image_folder_is_walked_in_the_order_of_its_sorted_paths(tmp_path):
    """The walk streams (one folder's names at a time) in the order that sorting every path gave:
    a folder's files and subfolders interleaved by name; symlinked folders listed, not followed."""
    from pipeline.sources import _walk

    root = tmp_path / "root"
    for rel in ["a/x.png", "a/b/y.png", "a/c.png", "a.png", "b/z.png", "a-b/w.png", ".hidden/v.png", "a/b/.u.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "t.png").write_bytes(b"")
    (root / "a" / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "a" / "dangling.png").symlink_to(tmp_path / "missing.png")
    walked = list(_walk(root))
    every = [p for p in root.rglob("*") if p.is_symlink() or p.is_file()]
    assert walked == sorted(every)
    assert root / "a" / "linked" in walked and not any("elsewhere" in str(p) for p in walked)
