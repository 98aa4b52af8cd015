"""Property-based tests: arbitrary sources through the real clean, normalise, dedup and split stages.

Hypothesis writes arbitrary texts (control characters, combining marks, right-to-left text, lone
surrogates where the format can carry them, NUL bytes, lone CR and LF, huge and empty strings),
arbitrary labels and arbitrary bytes posing as image files into a real source (TSV, CSV, JSONL,
an image folder root/<label>/<file>) beside a few well-formed records, and runs the stages one
after another through `main([...])`. For every example:

1. each stage returns 0, or fails with one `UserError` line: no library traceback escapes;
2. each stage's metrics balance (`contract.unbalanced`);
3. every record a stage read is in its output or in its ledger, with a fate and a reason;
4. a rerun in a fresh folder writes the same bytes.

Each test also runs one explicit example of every input that once escaped as a traceback (Pillow
readers raising TypeError, KeyError, NotImplementedError or AttributeError; JSON lines past the
recursion or integer-digit limits). `-m slow` runs the same properties on many more examples;
`--hypothesis-show-statistics` shows how the examples ended (exit codes, drop reasons, merges).
"""
from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import write_params
from contract import unbalanced
from pipeline.io import read_records
from pipeline.ledger import FATES
from pipeline.params import DatasetParams
from pipeline.records import make_id
from pipeline.sources import read_source
from pipeline.stages import clean, dedup, normalise, split
from test_clean_steps import (dds_unknown_pixel_format, spider_image_outside_a_stack, tiff_second_frame_of_unknown_compression,
                              tiff_second_frame_without_size)
from test_normalise_steps import blp_unknown_compression

STAGES = {"clean": clean, "normalise": normalise, "dedup": dedup, "split": split}
SPLITS = ("train", "val", "test")
LABELS = ["a", "b"]
# Reproducible in CI; huge strings and image folders make slow examples, and that is the point.
COMMON = {"deadline": None, "derandomize": True, "database": None,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


# --- strategies: texts and labels -----------------------------------------------------------

NASTY = [
    "", " ", "\t", "\r", "\n", "\r\n", "\x00", "\x0b\x0c", "\x1c\x1d\x1e\x1f", "\x7f", "\x80\x9f", "\x85", "\u2028", "\u2029",
    "\u200b", "\u200f", "\u202e", "\u2066", "\ufeff", "\ufffd", "\U0010ffff", "\u0301\u0301", "e\u0301", "Z\u0337\u0322a\u0336",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u2067abc\u2069", "\ufb01",
    "\uff21\uff22", "&amp;&#0;&#xD800;", "<b>x</b>", "\x1b[31mred", "\u00c3\u00a9\u00c3\u00a8", "\ud800", "\udcff", "\udc80x",
    '"', "'", ",", "\\",
]
WORDS = ("invoice parcel refund courier depot charge account delivery monday card address label box "
         "order tracking payment receipt week late broken lamp door price twice wrong").split()

pieces = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=12),
    st.characters(categories=["Cc", "Cf", "Cs", "Co", "Mn", "Me", "Zl", "Zp", "Zs"]),
    st.sampled_from(WORDS),
)


def repeated(units: list[str], counts: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """A unit repeated many times: huge strings without generating every character."""
    return st.builds(lambda unit, n: unit * n, st.sampled_from(units), counts)


texts = st.one_of(
    st.lists(pieces, max_size=10).map("".join),
    repeated(["a ", "\u00e9", "\n", " ", "\u0301", "\x00", "x\t", "\ud800"], st.sampled_from([19_999, 20_001, 60_000])),  # max_chars
)
labels = st.one_of(
    st.sampled_from([*LABELS, " A ", "B\t", "\u00c0", "a\u0301", "\uff41", "", " ", "\u00a0", "\x00", "a\nb", "\ud800"]),
    st.lists(pieces, max_size=4).map("".join),
    repeated(["a", "\u00e9", "\u05d0"], st.integers(200, 3_000)),
)

json_junk = st.one_of(  # lines of a JSONL that are no record
    st.sampled_from(["[1]", "null", "{", '{"text": 1, "label": 2}', '{"text": null}', '{"text": "x", "label": [1, {}]}']),
    st.builds('{{"text": "x", "label": {}}}'.format, repeated(["9"], st.sampled_from([10, 4_301, 10_000]))),  # int() digit limit
    repeated(["[", '{"a": '], st.sampled_from([10, 2_000, 100_000])),  # nesting deeper than the recursion limit
)


def sentence(seed: int) -> str:
    """Eight distinct words drawn for `seed`: different sentences share few character 5-grams."""
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.choice(len(WORDS), 8, replace=False))


# --- strategies: image files ----------------------------------------------------------------

def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(seed: int, size: tuple[int, int] = (24, 24)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@st.composite
def pictures(draw) -> bytes:
    """A valid small image: random pixels, in one of several modes and formats (maybe two frames)."""
    image = noise(draw(st.integers(0, 2**32 - 1)), (draw(st.integers(1, 40)), draw(st.integers(1, 40))))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "LA", "I;16", "CMYK"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PCX", "TGA", "SGI", "PPM", "DDS", "BLP"]))
    image = image.convert(mode) if mode != "I;16" else Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    options = {"save_all": True, "append_images": [image.rotate(90)]} if fmt in ("GIF", "TIFF") and draw(st.booleans()) else {}
    try:
        return encoded(image, fmt, **options)
    except (OSError, ValueError, KeyError):  # a mode the format cannot hold
        return encoded(image.convert("RGB"), "PNG")


@st.composite
def mutated(draw, blobs: st.SearchStrategy[bytes]) -> bytes:
    """A blob with a few bytes overwritten (a bit rot in a header or in the pixel data)."""
    data = bytearray(draw(blobs))
    end = min(len(data), draw(st.sampled_from([128, 1 << 20])))  # headers are where parsers trip
    for _ in range(draw(st.integers(0, 4)) if data else 0):
        data[draw(st.integers(0, end - 1))] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
    return bytes(data)


MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0", b"MM\0*", b"DDS |",
         b"BLP1", b"BLP2", b"8BPS", b"icns", b"\0\0\1\0", b"\0\0\2\0", b"qoif", b"P6\n", b"\x01\xda", b"\x0a\x05\x01\x08", b"DanM",
         b"\x59\xa6\x6a\x95", b"SIMPLE  =", b"\0\0\0\x0cjP  \r\n\x87\n", b"%!PS-Adobe-3.0 EPSF-3.0\n", b"\x00\x00\x80?"]
# Files that tripped Pillow's readers into exceptions other than OSError and ValueError.
CRAFTED = [dds_unknown_pixel_format(), tiff_second_frame_without_size(), tiff_second_frame_of_unknown_compression(),
           spider_image_outside_a_stack(), blp_unknown_compression()]
image_blobs = st.one_of(
    pictures(),
    mutated(st.sampled_from(CRAFTED)),
    st.builds(lambda data, cut: data[:cut], pictures(), st.integers(0, 300)),  # truncated header or pixels
    mutated(pictures()),
    st.builds(bytes.__add__, st.sampled_from(MAGIC), st.binary(max_size=256)),  # a known header, then anything
    st.binary(max_size=64),
)
path_parts = st.text(st.characters(exclude_characters="/\x00", exclude_categories=["Cs"]), min_size=1, max_size=20)
folders = st.one_of(  # half the files in a label's folder, so that their bytes reach the decoders
    st.sampled_from(LABELS),
    st.sampled_from(["", "A", " a", "\u00c0", "\uff41", " ", "\t", "a\u0301", "\u05d0", ".hidden", "x/y", "\udcff", "x\udc80"]),
    path_parts,
    repeated(["a", "\u00e9"], st.integers(60, 120)),
)
file_names = st.one_of(  # half of them plain names with an image extension
    st.builds(str.__add__, st.text("abcdefgh0123", min_size=1, max_size=6),
              st.sampled_from([".png", ".jpg", ".gif", ".tif", ".webp"])),
    st.builds(str.__add__, st.sampled_from(["x", ".x", " ", "\u05d0", "\udcfe"]) | path_parts,
              st.sampled_from([".png", ".PNG", ".jpeg", ".bmp", ".tif", ".txt", ""])),
)


# --- sources --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Case:
    """One generated source: its dataset entry, engine settings, and its writer, which writes it
    under a root and returns the ids the reader must give its records."""

    dataset: dict
    engine: dict
    write: Callable[[Path], set[str]]


def interleave(draw: Callable, base: list, extra: list) -> list:
    """`extra` inserted into `base` at drawn places (base order kept)."""
    out = list(base)
    for item in extra:
        out.insert(draw(st.integers(0, len(out))), item)
    return out


def base_rows(count: int) -> list[tuple[str, str]]:
    """`count` well-formed (text, label) rows per label, so that split has classes to work with."""
    return [(sentence(100 * k + i), label) for k, label in enumerate(LABELS) for i in range(count)]


def base_pictures(count: int) -> list[tuple[str, str, bytes]]:
    """`count` well-formed (folder, name, PNG) files per label."""
    return [(label, f"base{i}.png", encoded(noise(100 * k + i), "PNG")) for k, label in enumerate(LABELS) for i in range(count)]


@st.composite
def text_cases(draw) -> Case:
    """A TSV, CSV or JSONL of arbitrary rows among well-formed ones (four per label, or none)."""
    fmt = draw(st.sampled_from(["tsv", "csv", "jsonl"]))
    base = base_rows(draw(st.sampled_from([0, 4, 4])))
    rows = interleave(draw, base, draw(st.lists(st.tuples(texts, labels), max_size=8)) + draw(text_copies(base)))
    dataset = {"modality": "text", "source": f"corpus.{fmt}", "format": fmt,
               "encoding": draw(st.sampled_from(["utf-8", "utf-8", "auto"])), **draw(declared_labels())}
    tail = draw(st.sampled_from([b"", b"", b"", b"\xff\xfe\x00", b"\x80\n\x00"]) | st.binary(max_size=16))  # bytes after the rows
    if fmt == "jsonl":
        junk = draw(st.lists(texts | json_junk, max_size=3))
        write = functools.partial(write_jsonl, rows=rows, junk=junk, ascii_only=draw(st.booleans()), tail=tail)
    else:
        header = draw(st.sampled_from([["text", "label"]] * 4 + [["label", "text"], ["text"]]))
        write = functools.partial(write_tsv if fmt == "tsv" else write_csv, rows=rows, header=header, tail=tail)
    return Case(dataset, {"partition_rows": draw(st.sampled_from([3, 16, 100_000]))}, write)  # several partitions, or one


def text_copies(base: list[tuple[str, str]]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Well-formed rows again, as they were, with more spaces or a word more, under any label:
    exact and near duplicates for dedup, some with conflicting labels."""
    ends, any_label = st.sampled_from(["", "  ", " !", " again"]), labels | st.sampled_from(LABELS)
    copy = st.builds(lambda text, end, label: (text + end, label), st.sampled_from([t for t, _ in base] or [""]), ends, any_label)
    return st.lists(copy, max_size=3 if base else 0)


def picture_copies(base: list[tuple[str, str, bytes]]) -> st.SearchStrategy[list[tuple[str, str, bytes]]]:
    """Well-formed pictures again, re-encoded (the same pixels, or JPEG's near copy) in a label's folder."""
    def files(copies: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
        return [(folder, f"copy{i}.{fmt.lower()}", encoded(Image.open(io.BytesIO(png)), fmt))
                for i, (folder, fmt, png) in enumerate(copies)]
    pngs = st.sampled_from([data for _, _, data in base] or [b""])
    copy = st.tuples(st.sampled_from(LABELS), st.sampled_from(["PNG", "BMP", "JPEG"]), pngs)
    return st.lists(copy, max_size=2 if base else 0).map(files)


def declared_labels() -> st.SearchStrategy[dict]:
    """Labels declared (others dropped as unknown) or left open."""
    return st.sampled_from([{}, {"labels": LABELS}])


def write_lines(path: Path, header: str, rows: list[str], tail: bytes) -> list[int]:
    """Write `header` and `rows` (each ending in a line break), then `tail`; return the line each
    row starts on. Lines end at CR, LF or CRLF, as the csv module counts them; lone surrogates
    become bytes that no UTF-8 decoder accepts."""
    path.write_bytes((header + "".join(rows)).encode("utf-8", "surrogatepass") + tail)
    starts, before = [], header
    for row in rows:
        starts.append(len(io.StringIO(before, newline="").readlines()) + 1)
        before += row
    return starts


def write_tsv(root: Path, *, rows: list[tuple[str, str]], header: list[str], tail: bytes) -> set[str]:
    """A TSV as a user might save one (no quoting); a row holds a record at its first line unless that line is blank."""
    path = root / "corpus.tsv"
    lines = [f"{text}\t{label}\n" for text, label in rows]
    starts = write_lines(path, "\t".join(header) + "\n", lines, tail)
    firsts = [io.StringIO(line, newline="").readline().rstrip("\r\n") for line in lines]
    return {make_id(path.name, start) for start, first in zip(starts, firsts, strict=True) if first}


def write_csv(root: Path, *, rows: list[tuple[str, str]], header: list[str], tail: bytes) -> set[str]:
    """A CSV written by the csv module (quoted where needed): every row is one record."""
    path, lines = root / "corpus.csv", []
    for row in rows:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        lines.append(buffer.getvalue())
    return {make_id(path.name, start) for start in write_lines(path, ",".join(header) + "\n", lines, tail)}


def write_jsonl(root: Path, *, rows: list[tuple[str, str]], junk: list[str], ascii_only: bool, tail: bytes) -> set[str]:
    """One JSON object per line (lone surrogates escaped, or raw where not ASCII-escaped), then junk
    lines: each line that is not blank is one record."""
    path = root / "corpus.jsonl"
    lines = [json.dumps({"text": text, "label": label}, ensure_ascii=ascii_only) for text, label in rows]
    lines += [line.replace("\n", " ").replace("\r", " ") for line in junk]
    path.write_bytes("".join(f"{line}\n" for line in lines).encode("utf-8", "surrogatepass") + tail)
    return {make_id(path.name, number) for number, line in enumerate(lines, start=1) if line.strip()}


@st.composite
def image_cases(draw) -> Case:
    """An image folder of arbitrary files, names and folders among well-formed pictures (four per label, or none)."""
    base = base_pictures(draw(st.sampled_from([0, 4, 4])))
    files = [*base, *draw(st.lists(st.tuples(folders, file_names, image_blobs), max_size=8)), *draw(picture_copies(base))]
    dataset = {"modality": "image", "source": "images", "format": "image_folder", **draw(declared_labels())}
    engine = {"partition_rows": draw(st.sampled_from([64, 160, 100_000]))}  # images: 2, 5 or all per partition
    return Case(dataset, engine, functools.partial(write_image_folder, files=files))


def write_image_folder(root: Path, *, files: list[tuple[str, str, bytes]]) -> set[str]:
    """root/images/<folder>/<file> ("": the file sits in the root); a name the file system refuses
    is skipped, as no user could have made it either. Returns the ids of the files written."""
    written = set()
    for folder, name, data in files:
        parts = PurePosixPath(folder, name).parts  # "./x.png" is "x.png"
        rel, path = "/".join(parts), root.joinpath("images", *parts)
        if ".." in parts:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(data)
                written.add(rel)
        except (OSError, UnicodeEncodeError):  # a name too long, a folder where a file is, a surrogate
            continue
    (root / "images").mkdir(exist_ok=True)
    return {make_id(rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), "") for rel in written}


# --- running the stages ---------------------------------------------------------------------

@dataclass(slots=True)
class StageRun:
    """What one stage did: its exit code, its error lines, and its output ids (None if it failed)."""

    name: str
    code: int
    errors: list[str]
    out_ids: set[str] | None


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def error_lines() -> Iterator[list[str]]:
    """The ERROR messages the pipeline logs inside the block."""
    handler, logger = _Lines(), logging.getLogger("pipeline")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


def stage_args(stage: str, root: Path, data: Path) -> list[str]:
    """The stage's own arguments, as tests/test_stages.py passes them."""
    inputs = {"normalise": "clean.parquet", "dedup": "normalise.parquet", "split": "dedup.parquet"}
    args = ["--root", str(root)] if stage == "clean" else ["--input", str(data / inputs[stage])]
    if stage == "split":
        return [*args, "--output", str(data / "split"), "--leakage", str(data / "leakage.json")]
    return [*args, "--output", str(data / f"{stage}.parquet")]


def output_ids(stage: str, data: Path) -> set[str]:
    """The ids of the records the stage wrote (split: in any of its three sets)."""
    if stage == "split":
        return {i for s in SPLITS for i in read_records(data / "split" / f"{s}.parquet", columns=["id"])["id"]}
    return set(read_records(data / f"{stage}.parquet", columns=["id"])["id"])


def run_stages(root: Path, out: Path, case: Case) -> list[StageRun]:
    """clean -> normalise -> dedup -> split on `root`, everything written under `out`; stops at a failure."""
    out.mkdir()
    params = write_params(out / "params.yaml", {"t": case.dataset}, engine=case.engine)
    runs = []
    for name, module in STAGES.items():
        common = ["--dataset", "t", "--params", str(params), "--metrics", str(out / "metrics" / "t" / f"{name}.json"),
                  "--ledger", str(out / "ledger" / f"{name}.parquet")]
        with error_lines() as errors:
            code = module.main([*common, *stage_args(name, root, out / "data")])  # any other exception fails the test
        shown = [line.replace(str(out), "<out>") for line in errors]  # a rerun writes elsewhere
        runs.append(StageRun(name, code, shown, output_ids(name, out / "data") if code == 0 else None))
        if code != 0:
            break
    return runs


# --- the properties -------------------------------------------------------------------------

def user_error_problems(runs: list[StageRun]) -> list[str]:
    """A failed stage must exit 1 or 2 with exactly one error line naming it."""
    last = runs[-1]
    if last.code == 0:
        return []
    one_line = len(last.errors) == 1 and "\n" not in last.errors[0] and last.errors[0].startswith(f"{last.name}@t failed: ")
    return [] if last.code in (1, 2) and one_line else [f"{last.name} exited {last.code} with {last.errors!r}"]


def unaccounted(read: set[str], kept: set[str], ledger: pd.DataFrame, metrics: dict) -> list[str]:
    """Records read but neither kept nor dropped or merged, and every other way the ledger, the
    output and the metrics can disagree (these stages generate no records)."""
    gone = ledger[ledger["fate"].isin(["dropped", "merged"])]
    merged_into = set(gone.loc[gone["fate"] == "merged", "into"])
    checks = {
        "read but neither kept nor dropped or merged": len(read - kept - set(gone["id"])),
        "written but never read": len(kept - read),
        "both kept and dropped or merged": len(kept & set(gone["id"])),
        "in the ledger but never read": len(set(ledger["id"]) - read),
        "ledger rows with an unknown fate": int((~ledger["fate"].isin(FATES)).sum()),
        "ledger rows without a reason": int((ledger["reason"].fillna("").str.strip() == "").sum()),
        "merged into a record not kept": len(merged_into - kept),
        "records in, not as many as read": abs(metrics["in"] - len(read)),
        "records out, not as many as written": abs(metrics["out"] - len(kept)),
    }
    return [f"{n} {what}" for what, n in checks.items() if n]


def accounting_problems(root: Path, out: Path, case: Case, runs: list[StageRun], expected: set[str]) -> list[str]:
    """Each finished stage's reads, outputs, ledger and metrics agree; clean read what the source holds."""
    if runs[0].out_ids is None:
        return unbalanced(out / "metrics")
    source = read_source(DatasetParams.model_validate(case.dataset), root)
    read, problems = set(source["id"]), [] if source["id"].is_unique else ["clean: the reader gave two records one id"]
    decoded_as_written = case.dataset.get("encoding") != "auto" or source.attrs.get("encoding") == "utf-8"
    if decoded_as_written and expected - read:
        problems.append(f"clean: {len(expected - read)} records in the source were never read")
    for run in runs:
        if run.out_ids is None:
            break
        ledger = pq.read_table(out / "ledger" / f"{run.name}.parquet").to_pandas()
        metrics = json.loads((out / "metrics" / "t" / f"{run.name}.json").read_text())
        problems += [f"{run.name}: {p}" for p in unaccounted(read, run.out_ids, ledger, metrics)]
        read = run.out_ids
        for reason in metrics["dropped"]:
            event(f"{run.name} dropped {reason}")
        if metrics["merged"]:
            event(f"{run.name} merged records")
    return problems + unbalanced(out / "metrics")


def file_hashes(out: Path) -> dict[str, str]:
    """SHA-256 of every file under `out`, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*")) if p.is_file()}


def check_case(case: Case, base: Path) -> None:
    """Write the case's source, run the stages twice in fresh folders, and check the four properties."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        root, first, second = Path(tmp, "source"), Path(tmp, "run1"), Path(tmp, "run2")
        root.mkdir()
        expected = case.write(root)
        runs = run_stages(root, first, case)
        event(f"stopped after {runs[-1].name} (exit {runs[-1].code})" if runs[-1].code else "all four stages ran")
        problems = user_error_problems(runs) + accounting_problems(root, first, case, runs, expected)
        assert not problems, problems
        rerun = run_stages(root, second, case)
        assert [(r.name, r.code, r.errors) for r in rerun] == [(r.name, r.code, r.errors) for r in runs]
        assert file_hashes(second) == file_hashes(first)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """One folder for the module's examples (each cleans up after itself): hypothesis reruns a test
    function many times, so it takes no function-scoped `tmp_path`."""
    return tmp_path_factory.mktemp("properties")


# Always run, whatever hypothesis draws: one of each kind of input that once escaped as a traceback.
KNOWN_BAD_TEXTS = Case({"modality": "text", "source": "corpus.jsonl", "format": "jsonl"}, {"partition_rows": 3}, functools.partial(
    write_jsonl, rows=[*base_rows(4), ("\x00" * 3, "a"), ("\ud800", "b"), ("x" * 20_001, "a"), ("\u200b", "b"), ("ok", "\n")],
    junk=["[" * 100_000, '{"text": "x", "label": ' + "9" * 5_000 + "}"], ascii_only=False, tail=b"\x80"))
KNOWN_BAD_IMAGES = Case({"modality": "image", "source": "images", "format": "image_folder"}, {"partition_rows": 64}, functools.partial(
    write_image_folder, files=[*base_pictures(4), *[("a", f"crafted{i}.png", blob) for i, blob in enumerate(CRAFTED)],
                               ("b", "copy.bmp", encoded(noise(100), "BMP")), ("\udcff", "x.png", b"")]))


@settings(max_examples=5, **COMMON)
@given(case=text_cases())
@example(case=KNOWN_BAD_TEXTS)
def test_any_text_source_is_accounted_for(case, base):
    check_case(case, base)


@settings(max_examples=4, **COMMON)
@given(case=image_cases())
@example(case=KNOWN_BAD_IMAGES)
def test_any_image_folder_is_accounted_for(case, base):
    check_case(case, base)


@pytest.mark.slow
@settings(max_examples=75, **COMMON)
@given(case=text_cases())
def test_any_text_source_is_accounted_for_many(case, base):
    check_case(case, base)


@pytest.mark.slow
@settings(max_examples=75, **COMMON)
@given(case=image_cases())
def test_any_image_folder_is_accounted_for_many(case, base):
    check_case(case, base)
