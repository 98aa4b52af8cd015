"""The engine: the same bytes from every scheduler, worker count and partition size.

The Dask tests start their own LocalCluster (worker processes, so pickling and worker faults are
real) and close it; nothing depends on a scheduler outside the test.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_params
from pipeline.engines import session
from pipeline.stages import clean, dedup, normalise, split

WORDS = "invoice parcel refund courier depot charge account delivery monday card address label box".split()


def write_corpus(root: Path, rows: int = 300) -> None:
    """A TSV of `rows` texts in two classes, with bad rows, exact and near copies and label conflicts."""
    lines, previous = ["text\tlabel"], ""
    gen = np.random.default_rng(rows)
    vocabulary = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in "lmnrst"]
    for i in range(rows):
        text = " ".join(gen.choice(vocabulary, 12))
        if i % 17 == 0:
            text = "  " + text.upper() + "  "  # normalise folds the whitespace
        if i % 23 == 0:
            lines.append("too\tmany\tfields")
        if i % 5 == 1:
            text = previous.strip().lower() + " please"  # a near copy of the row before
        if i % 11 == 2:
            text = previous  # an exact copy, maybe under the other label
        lines.append(f"{text}\t{'billing' if i % 3 else 'shipping'}")
        previous = text
    (root / "corpus.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def digest(folder: Path) -> str:
    """SHA-256 over every file under `folder` (names and bytes), in name order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


TSV = {"modality": "text", "source": "corpus.tsv", "format": "tsv"}


def run_chain(root: Path, engine: dict, dataset: dict = TSV) -> dict[str, str]:
    """clean, normalise, dedup and split of the corpus under `engine`; the digest of each output."""
    params = write_params(root / "params.yaml", {"t": dataset}, engine=engine)
    d = root / "data"
    common = ["--dataset", "t", "--params", str(params)]
    assert clean.main([*common, "--root", str(root), "--output", str(d / "clean.parquet"),
                       "--ledger", str(d / "ledger" / "clean.parquet"), "--metrics", str(d / "clean.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet"),
                           "--ledger", str(d / "ledger" / "normalise.parquet"), "--metrics", str(d / "normalise.json")]) == 0
    assert dedup.main([*common, "--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet"),
                       "--ledger", str(d / "ledger" / "dedup.parquet"), "--metrics", str(d / "dedup.json")]) == 0
    assert json.loads((d / "dedup.json").read_text())["merged"] > 10  # the corpus exercises dedup
    assert split.main([*common, "--input", str(d / "dedup.parquet"), "--output", str(d / "split"),
                       "--leakage", str(d / "leakage.json"), "--metrics", str(d / "split.json")]) == 0
    names = ("clean.parquet", "normalise.parquet", "dedup.parquet", "split", "leakage.json", "ledger/clean.parquet",
             "ledger/normalise.parquet", "ledger/dedup.parquet")
    return {name: digest(d / name) if (d / name).is_dir() else hashlib.sha256((d / name).read_bytes()).hexdigest() for name in names}


@pytest.mark.parametrize(("engine", "modality", "total", "rows"), [
    ({}, "text", 10_000_000, 100_000),                                     # one process: partition_rows
    ({}, "image", None, 3_125),                                            # images: a thirty-second of it
    ({"workers": 2}, "text", 1_000_000, 100_000),                          # enough for both workers anyway
    ({"workers": 2}, "text", 200_000, 25_000),                             # four partitions per worker
    ({"workers": 2}, "text", 500, 2_000),                                  # a small set stays whole
    ({"workers": 2, "partition_rows": 16}, "text", 500, 16),               # the user's size always holds
    ({"kind": "dask", "dask": {"workers": 4}}, "image", 100_000, 3_125),
    ({"kind": "dask", "dask": {"workers": 4}}, "image", 300, 62),
])
def test_partition_rows_split_for_the_workers_but_not_a_small_set(tmp_path, engine, modality, total, rows):
    from pipeline.engines.engine import Engine
    from pipeline.params import EngineParams

    chosen = Engine(EngineParams(**engine), session.Session(None, "test"), tmp_path).partition_rows(modality, total)
    assert chosen == rows


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    write_corpus(tmp_path)
    return tmp_path


def split_files(root: Path) -> dict:
    """A corpus as a public corpus ships: train.tsv and test.tsv in a folder; its dataset params."""
    write_corpus(root, rows=120)
    lines = (root / "corpus.tsv").read_text().splitlines()
    folder = root / "shipped"
    folder.mkdir()
    (folder / "train.tsv").write_text("\n".join(lines[:91]) + "\n")
    (folder / "test.tsv").write_text("\n".join(lines[:1] + lines[91:]) + "\n")
    return {**TSV, "source": "shipped", "files": {"train": "train.tsv", "test": "test.tsv"}, "source_split": "keep"}


@pytest.mark.slow  # four stages; the readers' tests (test_sources.py) cover the picking fast
def test_shipped_split_files_keep_their_split_through_the_chain(tmp_path):
    """test.tsv's records end in test, val is cut from train.tsv alone, and a bad row is named by
    its file and line (each file is read on its own, in partitions)."""
    from pipeline.io import read_records

    run_chain(tmp_path, {"partition_rows": 40}, split_files(tmp_path))
    d = tmp_path / "data"
    clean = read_records(d / "clean.parquet")
    assert set(clean.groupby("source_split")["source"].unique().map(tuple)) == {("train.tsv",), ("test.tsv",)}
    final = pd.concat([read_records(p).assign(split=p.name.removesuffix(".parquet")) for p in (d / "split").glob("*.parquet")])
    assert set(final.loc[final["source"] == "test.tsv", "split"]) == {"test"}
    assert set(final.loc[final["source"] == "train.tsv", "split"]) == {"train", "val"}
    assert json.loads((d / "split.json").read_text())["source_split"] is True
    ledger = pd.read_parquet(d / "ledger" / "clean.parquet")
    ragged = ledger.loc[ledger["reason"] == "ragged_row", "detail"]
    assert {detail.split(":")[0] for detail in ragged} == {"train.tsv", "test.tsv"}


@pytest.mark.parametrize("rows", [64, pytest.param(7, marks=pytest.mark.slow)])
def test_partition_size_never_changes_the_bytes(corpus_dir, tmp_path_factory, rows):
    whole = run_chain(corpus_dir, {"partition_rows": 100_000})
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
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", "1s")
    params = write_params(corpus_dir / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          engine={"kind": "dask", "dask": {"scheduler_address": "tcp://127.0.0.1:9"}})
    started = time.perf_counter()
    code = clean.main(["--dataset", "t", "--params", str(params), "--root", str(corpus_dir),
                       "--output", str(corpus_dir / "out"), "--metrics", str(corpus_dir / "m.json")])
    assert code == 1 and time.perf_counter() - started < 15
    assert "tcp://127.0.0.1:9" in caplog.text and "engine.dask.scheduler_address" in caplog.text


def test_a_failing_partition_names_where_it_comes_from(tmp_path):
    from pipeline.engines.engine import _run_step
    from pipeline.errors import StageError

    def user_error(frame):
        raise StageError("too few classes")

    def bug(frame):
        raise KeyError("text")

    with pytest.raises(StageError, match=r"^clean.parquet/part-00000.parquet rows 0-99: too few classes$"):
        _run_step(None, user_error, "clean.parquet/part-00000.parquet rows 0-99", tmp_path / "r", tmp_path / "f", None)
    with pytest.raises(KeyError) as caught:
        _run_step(None, bug, "clean.parquet/part-00001.parquet rows 100-199", tmp_path / "r", tmp_path / "f", None)
    assert caught.value.__notes__ == ["while processing partition clean.parquet/part-00001.parquet rows 100-199"]


@pytest.mark.slow
def test_a_worker_killed_mid_stage_is_replaced_and_the_output_is_the_same(tmp_path_factory):
    """A real SIGKILL of a LocalCluster worker process while dedup runs on it: the nanny starts
    another, the scheduler reruns the lost tasks, and the stage writes the bytes of a clean run."""
    import os
    import signal
    import threading

    from distributed import Client, LocalCluster

    local_dir = tmp_path_factory.mktemp("local")
    write_corpus(local_dir, rows=1200)
    want = run_chain(local_dir, {"partition_rows": 60})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GB", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        killed = threading.Event()

        def kill_one_when_busy() -> None:
            while not killed.is_set():
                if any(client.processing().values()):
                    os.kill(next(iter(pids.values())), signal.SIGKILL)
                    killed.set()
                time.sleep(0.05)

        threading.Thread(target=kill_one_when_busy, daemon=True).start()
        other = tmp_path_factory.mktemp("cluster")
        write_corpus(other, rows=1200)
        got = run_chain(other, {"kind": "dask", "partition_rows": 60, "dask": {"scheduler_address": cluster.scheduler_address}})
        killed.set()
        assert set(client.run(os.getpid).values()) != set(pids.values())  # a replacement worker joined
    assert got == want


@pytest.mark.parametrize("partitions", [1, 3, 7])
def test_a_shuffle_moves_every_row_with_its_types_and_leaves_no_file(tmp_path, partitions):
    """group and route exchange spill files: rows arrive whole (nullable ints, bytes, missing labels
    included) where they belong, and no exchange file outlives the compute that read it."""
    import dask.dataframe as dd
    import pyarrow as pa

    from pipeline.engines import open_engine
    from pipeline.engines.engine import Partitioned
    from pipeline.params import EngineParams

    rng = np.random.default_rng(7)
    n = 500
    frame = pd.DataFrame({"key": np.sort(rng.choice(2**40, n, replace=False)).astype(np.uint64),
                          "label": rng.choice(np.array(["a", "b", None], dtype=object), n),
                          "row": pd.array(np.where(rng.random(n) < 0.2, None, np.arange(n)), dtype="Int64"),
                          "blob": [bytes([i % 251]) * (i % 5) for i in range(n)]})
    with open_engine(EngineParams(), tmp_path, "test") as engine:
        parts = Partitioned(dd.from_pandas(frame, npartitions=partitions, sort=False), tuple(map(str, range(partitions))))
        onto = engine.materialize(parts, schema=pa.Schema.from_pandas(frame, preserve_index=False), key="key")
        mixed = Partitioned(dd.from_pandas(frame.sample(frac=1, random_state=3), npartitions=partitions, sort=False), parts.labels)
        grouped = engine.collect(engine.group(mixed, ["label"], order=["key"], meta=frame.iloc[:0]))
        by_partition = engine._compute(engine.route(mixed, "key", onto=onto).frame.to_delayed())
        leftovers = sorted(p.name for p in engine.scratch.glob("shuffle-*"))
    pd.testing.assert_frame_equal(grouped.sort_values("key").reset_index(drop=True), frame)
    assert [str(t) for t in grouped.dtypes] == [str(t) for t in frame.dtypes]
    bounds = list(onto.bounds) + [2**64]
    for i, rows in enumerate(by_partition):
        assert ((rows["key"] >= bounds[i]) & (rows["key"] < bounds[i + 1])).all()
    assert sum(map(len, by_partition)) == n and leftovers == []


# --- corpus-relative quality limits: fitted over every partition, applied per partition ------------

def write_photos(root: Path, count: int = 40) -> None:
    """Textured PNGs in two classes; every eighth blurred hard, so the corpus's own fence catches it."""
    import cv2
    from PIL import Image

    gen = np.random.default_rng(count)
    for i in range(count):
        folder = root / "photos" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        blocks = cv2.resize(gen.integers(0, 256, (6, 6, 3), dtype=np.uint8), (48, 48), interpolation=cv2.INTER_NEAREST)
        pixels = np.clip(blocks + gen.normal(0, 4 + i % 5, blocks.shape), 0, 255).astype(np.uint8)
        if i % 8 == 3:
            pixels = cv2.GaussianBlur(pixels, (0, 0), 3.0)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")


def run_normalise(root: Path, engine: dict) -> tuple[dict[str, str], dict]:
    """clean and normalise of the photos with a relative `blurry` limit: output digests and metrics."""
    quality = {"blurry": {"min": None, "outlier_iqr": 1.5}, "low_information": {"min": 3.0, "action": "off"}}
    dataset = {"modality": "image", "source": "photos", "format": "image_folder"}
    params = write_params(root / "params.yaml", {"im": dataset}, engine=engine, normalise={"image": {"size": 32, "quality": quality}})
    d, common = root / "data", ["--dataset", "im", "--params", str(params)]
    assert clean.main([*common, "--root", str(root), "--output", str(d / "clean.parquet"), "--metrics", str(d / "clean.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet"),
                           "--ledger", str(d / "ledger.parquet"), "--metrics", str(d / "normalise.json")]) == 0
    digests = {name: digest(d / name) if (d / name).is_dir() else hashlib.sha256((d / name).read_bytes()).hexdigest()
               for name in ("normalise.parquet", "ledger.parquet")}
    return digests, json.loads((d / "normalise.json").read_text())


@pytest.mark.parametrize("engine", [
    {"partition_rows": 5 * 32},                                                  # 5 images a partition
    pytest.param({"kind": "dask", "partition_rows": 7 * 32, "dask": {"workers": 2, "memory_limit": "1GB"}},
                 marks=pytest.mark.slow),
])
def test_relative_quality_limits_are_fitted_on_the_whole_corpus_whatever_the_partitions(tmp_path_factory, engine):
    whole_root, other_root = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("parts")
    write_photos(whole_root)
    write_photos(other_root)
    whole, metrics = run_normalise(whole_root, {})
    assert run_normalise(other_root, engine) == (whole, metrics)
    limit = metrics["quality_limits"]["blurry"]
    assert limit["absolute"] is None and limit["applied"] == limit["fence"] > 0
    flagged = pd.read_parquet(whole_root / "data" / "ledger.parquet").query("reason == 'blurry'")
    assert sorted(flagged["id"]) == sorted(read_ids(whole_root, lambda name: int(name[:3]) % 8 == 3))
    assert metrics["flagged"] == {"blurry": 5}


def read_ids(root: Path, chosen) -> list[str]:
    """Record ids of the clean output whose file name `chosen` accepts."""
    from pipeline.io import read_records

    records = read_records(root / "data" / "clean.parquet")
    return records.loc[[chosen(Path(s).name) for s in records["source"]], "id"].tolist()
