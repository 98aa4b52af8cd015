"""The engine: the same bytes from every scheduler, worker count and partition size.

The Dask tests start their own LocalCluster (worker processes, so pickling and worker faults are
real) and close it; nothing depends on a scheduler outside the test.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from conftest import write_params
from pipeline.engines import session
from pipeline.stages import clean, normalise

WORDS = "invoice parcel refund courier depot charge account delivery monday card address label box".split()


def write_corpus(root: Path, rows: int = 300) -> None:
    """A TSV of `rows` texts in two classes, with bad rows sprinkled in (so the ledger has rows too)."""
    lines = ["text\tlabel"]
    for i in range(rows):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6)]
        text = " ".join(words) + f" order {i}"
        if i % 17 == 0:
            text = "  " + text.upper() + "  "  # normalise folds the whitespace
        if i % 23 == 0:
            lines.append("too\tmany\tfields")
        lines.append(f"{text}\t{'billing' if i % 3 else 'shipping'}")
    (root / "corpus.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def digest(folder: Path) -> str:
    """SHA-256 over every file under `folder` (names and bytes), in name order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_chain(root: Path, engine: dict) -> dict[str, str]:
    """clean and normalise of the corpus under `engine`; the digest of each output."""
    params = write_params(root / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          engine=engine)
    d = root / "data"
    common = ["--dataset", "t", "--params", str(params)]
    assert clean.main([*common, "--root", str(root), "--output", str(d / "clean.parquet"),
                       "--ledger", str(d / "ledger" / "clean.parquet"), "--metrics", str(d / "clean.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet"),
                           "--ledger", str(d / "ledger" / "normalise.parquet"), "--metrics", str(d / "normalise.json")]) == 0
    return {name: digest(d / name) if (d / name).is_dir() else hashlib.sha256((d / name).read_bytes()).hexdigest()
            for name in ("clean.parquet", "normalise.parquet", "ledger/clean.parquet", "ledger/normalise.parquet")}


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    write_corpus(tmp_path)
    return tmp_path


def test_partition_size_never_changes_the_bytes(corpus_dir, tmp_path_factory):
    whole = run_chain(corpus_dir, {"partition_rows": 100_000})
    for rows in (7, 64):
        other = tmp_path_factory.mktemp(f"rows{rows}")
        write_corpus(other)
        assert run_chain(other, {"partition_rows": rows}) == whole


@pytest.mark.slow
def test_a_dask_cluster_gives_the_bytes_of_the_local_engine(corpus_dir, tmp_path_factory):
    local = run_chain(corpus_dir, {"partition_rows": 50})
    for workers in (1, 2):
        other = tmp_path_factory.mktemp(f"dask{workers}")
        write_corpus(other)
        engine = {"kind": "dask", "partition_rows": 40, "dask": {"workers": workers, "memory_limit": "1GB"}}
        assert run_chain(other, engine) == local


def test_an_unreachable_scheduler_fails_in_seconds_naming_it(corpus_dir, caplog, monkeypatch):
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", "2s")
    params = write_params(corpus_dir / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          engine={"kind": "dask", "dask": {"scheduler_address": "tcp://127.0.0.1:9"}})
    started = time.perf_counter()
    code = clean.main(["--dataset", "t", "--params", str(params), "--root", str(corpus_dir),
                       "--output", str(corpus_dir / "out"), "--metrics", str(corpus_dir / "m.json")])
    assert code == 1 and time.perf_counter() - started < 15
    assert "tcp://127.0.0.1:9" in caplog.text and "engine.dask.scheduler_address" in caplog.text
