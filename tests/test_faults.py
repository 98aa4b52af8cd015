"""Faults: a stage killed at any moment, a full disk, an unwritable folder, a memory limit.

Each stage runs as its own process with the command line `dvc.yaml` gives it, on a generated corpus
in small partitions (and, through a harness, small shards), so there are many write steps to be
killed between. The harness stands in for `python -m pipeline.stages.<stage>`: it installs an audit
hook that counts the stage's write steps (spill and shard files, renames, temporary files) and
sends the process SIGKILL at a chosen one, and it can shrink `pipeline.io.SHARD_ROWS`; it changes
nothing else.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ROOT, write_params
from contract import RUN_ENV, dvc, lock_outs
from pipeline.demo import demo_texts, write_text_demo
from pipeline.errors import StorageError
from pipeline.io import SHARD_ROWS, record_count, write_table
from pipeline.stages.base import stage_main
from pipeline.workspace import make_workspace

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_text_scale import make_rows, write_corpus  # noqa: E402

DATASET = {"modality": "text", "source": "corpus.tsv", "format": "tsv", "columns": {"text": "text", "label": "label"},
           "labels": ["billing", "shipping", "technical"],
           "label_map": {"bill": "billing", "ship": "shipping", "tech support": "technical"}}
KILLED = -signal.SIGKILL

# Runs `python -m <module> <argv>` in the stage environment. FAULT_KILL="event|regex|n": SIGKILL
# at the n-th write step `event` whose path matches regex (the hook runs before the step; the
# pseudo-event parquet.written after a Parquet file is written). FAULT_TRACE: file for the steps
# seen. FAULT_SHARD_ROWS: records per shard (many shards from a small corpus). FAULT_VMPEAK: file
# for the process's peak virtual memory.
HARNESS = r'''
import json, os, re, runpy, signal, sys
from pipeline.stages.base import kernel_settings, stage_environment

module, argv = sys.argv[1], sys.argv[2:]
env = stage_environment(dict(os.environ), **kernel_settings(argv))
if env != dict(os.environ):
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)

import pyarrow.parquet as pq
from pipeline import io

STEPS = {"os.rename", "os.remove", "tempfile.mkdtemp", "open", "parquet.write", "parquet.written"}
event, pattern, at = (os.environ.get("FAULT_KILL") or "||0").split("|")
trace, matched = [], 0
io.SHARD_ROWS = int(os.environ.get("FAULT_SHARD_ROWS", io.SHARD_ROWS))

def writes(args):
    mode, flags = args[1], args[2]
    return any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))

def hook(name, args):
    global matched
    if name not in STEPS or (name == "open" and not writes(args)):
        return
    if name == event and re.search(pattern, str(args[0])):
        matched += 1
        if matched == int(at):
            os.kill(os.getpid(), signal.SIGKILL)
    trace.append([name, str(args[0])])

write_table = pq.write_table
def traced_write_table(table, where, *args, **kwargs):
    sys.audit("parquet.write", where)
    write_table(table, where, *args, **kwargs)
    sys.audit("parquet.written", where)
pq.write_table = traced_write_table

def report():
    if os.environ.get("FAULT_TRACE"):
        with open(os.environ["FAULT_TRACE"], "w") as out:
            json.dump(trace, out)
    if os.environ.get("FAULT_VMPEAK"):
        peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmPeak"))
        with open(os.environ["FAULT_VMPEAK"], "w") as out:
            out.write(peak)

sys.addaudithook(hook)
sys.argv = [module, *argv]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    report()
'''


# --- stages as dvc.yaml runs them -----------------------------------------------------------

def stage_command(stage: str, dataset: str = "t") -> tuple[str, list[str]]:
    """The module and arguments of `stage` for `dataset`, from dvc.yaml's cmd."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]
    words = shlex.split(spec["cmd"].replace("${key}", dataset))
    assert words[:2] == ["scripts/venv-python", "-m"], words
    return words[2], words[3:]


def stage_outputs(stage: str, dataset: str = "t") -> list[str]:
    """What `stage` writes for `dataset`: its outs, metrics and metrics file (timings aside)."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]
    named = [*spec["outs"], *[next(iter(m)) if isinstance(m, dict) else m for m in spec.get("metrics", [])]]
    _, argv = stage_command(stage, dataset)
    named.append(argv[argv.index("--metrics") + 1])
    return sorted(n.replace("${key}", dataset) for n in named)


def harness_env(**extra: str | int) -> dict[str, str]:
    """This environment, this checkout's package first, and the harness settings `extra` (only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAULT_")}
    return {**env, "PYTHONPATH": str(ROOT), **{k: str(v) for k, v in extra.items()}}


def run_stage(workdir: Path, stage: str, *, timeout: int = 300, **fault: str | int) -> subprocess.CompletedProcess:
    """`stage` run in `workdir` through the harness (FAULT_* settings from `fault`)."""
    module, argv = stage_command(stage)
    return subprocess.run([sys.executable, "-c", HARNESS, module, *argv], cwd=workdir, env=harness_env(**fault),
                          capture_output=True, text=True, timeout=timeout)


def plain_stage(workdir: Path, stage: str, preexec=None) -> subprocess.CompletedProcess:
    """`stage` run exactly as dvc.yaml's cmd runs it, after `preexec` (a resource limit) in the child."""
    module, argv = stage_command(stage)
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=workdir, env=harness_env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=preexec)


# --- workspaces -----------------------------------------------------------------------------

@dataclass(slots=True)
class Baseline:
    """A workspace after uninterrupted runs: its files, each stage's write steps, duration and
    records per shard."""

    workdir: Path
    files: dict[str, str]
    traces: dict[str, list[list[str]]]
    seconds: dict[str, float]
    shard_rows: dict[str, int]


def make_corpus(workdir: Path, *, records: int, partition_rows: int, demo: bool) -> None:
    """A corpus of `records` messages, and params that cut it into small partitions: the demo's
    (broken rows, label spellings, templated messages) or the scale benchmark's (random words, a
    tenth exact and a tenth near copies), which dedup and split get through four times faster."""
    workdir.mkdir(parents=True)
    if demo:
        write_text_demo(workdir, records, 42)
    else:
        write_corpus(workdir, make_rows(records, 0)[0])
    params = {"datasets": {"t": DATASET}, "engine": {"partition_rows": partition_rows}}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_chain(workdir: Path, shard_rows: dict[str, int]) -> Baseline:
    """Run the stages `shard_rows` names in order, uninterrupted, tracing each one's write steps."""
    traces, seconds = {}, {}
    for stage in shard_rows:
        started = time.perf_counter()
        done = run_stage(workdir, stage, FAULT_TRACE=workdir.parent / f"{stage}.trace", FAULT_SHARD_ROWS=shard_rows[stage])
        seconds[stage] = time.perf_counter() - started
        assert done.returncode == 0, done.stderr[-3000:]
        traces[stage] = json.loads((workdir.parent / f"{stage}.trace").read_text())
    return Baseline(workdir, snapshot(workdir), traces, seconds, shard_rows)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Baseline:
    """Clean of 20,000 messages in 21 partitions and 32 shards (a few seconds)."""
    workdir = tmp_path_factory.mktemp("large") / "ws"
    make_corpus(workdir, records=20_000, partition_rows=1_000, demo=True)
    return run_chain(workdir, {"clean": 1_000})


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Baseline:
    """Clean to split of 600 messages in 4 partitions (embed, semantic and label_issues between: split
    reads their records and vectors); dedup writes 8 shards, split 32 for train
    (4 for val and test). A stage's partitions never span two shards of its input, so clean and
    normalise write one each: many shards in would make many partitions and slow the next stage."""
    workdir = tmp_path_factory.mktemp("small") / "ws"
    make_corpus(workdir, records=600, partition_rows=160, demo=False)
    return run_chain(workdir, {"clean": SHARD_ROWS, "normalise": SHARD_ROWS, "dedup": 75, "embed": 75, "semantic": 75,
                               "label_issues": 75, "split": 20})


def copy_of(baseline: Baseline, into: Path, *, without: str | None = None) -> Path:
    """A copy of the baseline workspace, less the outputs of stage `without`."""
    workdir = into / "ws"
    shutil.copytree(baseline.workdir, workdir, symlinks=True)
    for name in stage_outputs(without) if without else []:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return workdir


def with_previous_outputs(baseline: Baseline, into: Path, stage: str) -> tuple[Path, dict[str, str]]:
    """A copy of the workspace in which `stage` has just run as dvc.yaml runs it (shards of the
    real size), and its files."""
    workdir = copy_of(baseline, into, without=stage)
    done = plain_stage(workdir, stage)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, snapshot(workdir)


def snapshot(workdir: Path) -> dict[str, str]:
    """Every file and folder under data/ and metrics/ (wall-clock timings aside): path -> digest."""
    files = {}
    for top in ("data", "metrics"):
        for path in sorted((workdir / top).rglob("*")):
            rel = path.relative_to(workdir).as_posix()
            if "/timings" in rel:
                continue
            files[rel] = "folder" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return files


# --- what a killed run may leave --------------------------------------------------------------

def torn_outputs(workdir: Path, baseline: dict[str, str]) -> list[str]:
    """What a reader could take for a wrong output: a file that differs from the uninterrupted
    run's, a record set folder with a file missing or extra, a new file or folder that is not
    hidden (temporary names start with a dot), or a ledger folder its reader cannot read."""
    now = snapshot(workdir)
    problems = [f"{p} differs from the uninterrupted run's" for p, d in now.items() if p in baseline and d != baseline[p]]
    problems += [f"{p} is left and not hidden" for p in now if p not in baseline and not _hidden(p)]
    for folder in (p for p, d in baseline.items() if d == "folder" and p.endswith(".parquet")):
        if folder in now and _inside(now, folder) != _inside(baseline, folder):
            problems.append(f"{folder} is a partial record set: {sorted(set(_inside(now, folder)) ^ set(_inside(baseline, folder)))}")
    ledger = workdir / "data" / "t" / "ledger"
    if ledger.is_dir() and any(not p.name.startswith(".") for p in ledger.iterdir()):
        pq.read_table(ledger)  # the whole ledger as one table (README): a partial file would fail here
    return problems


def _hidden(path: str) -> bool:
    return any(part.startswith(".") for part in Path(path).parts)


def _inside(files: dict[str, str], folder: str) -> dict[str, str]:
    return {p: d for p, d in files.items() if p.startswith(folder + "/")}


# --- kill points ----------------------------------------------------------------------------

@dataclass(slots=True, frozen=True)
class Kill:
    """SIGKILL at the n-th write step `event` whose path matches `pattern`."""

    event: str
    pattern: str
    n: int = 1

    @property
    def spec(self) -> str:
        return f"{self.event}|{self.pattern}|{self.n}"


SPILL = r"-scratch-[^/]+/[a-z]+-\d+\.parquet$"


def _tmp(name: str) -> str:
    """A record set's temporary folder beside it."""
    return rf"/\.{re.escape(name)}\.[^/]+"


def shard_kills(trace: list[list[str]], name: str) -> list[Kill]:
    """While writing record set `name`: after its first shard, after half of them, before its rename."""
    shard = _tmp(name) + "/part-"
    shards = _count(trace, "parquet.written", shard)
    assert shards >= 2, f"{name}: only {shards} shard"
    return [Kill("parquet.written", shard, 1), Kill("parquet.written", shard, shards // 2), Kill("os.rename", _tmp(name) + "$")]


def spill_kills(trace: list[list[str]], *fractions: float) -> list[Kill]:
    """While reading and working: after that fraction of the scratch spills."""
    spills = _count(trace, "parquet.written", SPILL)
    return [Kill("parquet.written", SPILL, max(1, int(spills * f))) for f in fractions]


def _count(trace: list[list[str]], event: str, pattern: str) -> int:
    return sum(1 for name, path in trace if name == event and re.search(pattern, path))


def metrics_kills(stage: str) -> list[Kill]:
    """Between the record sets and the metrics, with the metrics written but not renamed, with the
    old record set still being removed (after an earlier kill left a complete one), and with the
    ledger written but not renamed."""
    return [Kill("open", rf"/\.{stage}\.json\.tmp$"), Kill("os.rename", rf"metrics/t/\.{stage}\.json\.tmp$"),
            Kill("os.remove", r"^part-", 3), Kill("os.rename", rf"ledger/\.{stage}\.parquet\.tmp$")]


def kill_points(stage: str, trace: list[list[str]]) -> list[Kill]:
    """Every kind of write step for clean; for dedup and split what they add: dedup's exchanges,
    split's certificate and its three record sets one after another (the writes after the record
    sets are `stage_main`'s, the same code in every stage)."""
    if stage == "clean":
        return [*spill_kills(trace, 0.3, 0.7), *shard_kills(trace, "clean.parquet"), *metrics_kills(stage)]
    if stage == "dedup":
        return [*spill_kills(trace, 0.3, 0.7), *shard_kills(trace, "dedup.parquet")]
    train, val, test = (shard_kills(trace, f"{s}.parquet") for s in ("train", "val", "test"))
    leakage, ledger = Kill("os.rename", r"final/\.leakage\.json\.tmp$"), metrics_kills(stage)[-1]
    return [*spill_kills(trace, 0.5), leakage, *train[1:], val[0], test[2], ledger]


def kill_after(workdir: Path, stage: str, seconds: float, shard_rows: int) -> int:
    """Start `stage` and SIGKILL it after `seconds` (it may have finished); its exit code."""
    module, argv = stage_command(stage)
    process = subprocess.Popen([sys.executable, "-c", HARNESS, module, *argv], cwd=workdir,
                               env=harness_env(FAULT_SHARD_ROWS=shard_rows), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
    return process.wait()


# --- 1. SIGKILL at any moment -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("stage", ["clean", "dedup", "split"])
def test_a_killed_stage_leaves_old_outputs_or_none_and_a_rerun_gives_the_same_bytes(stage, request, tmp_path):
    """Killed at each write step (reading, spilling, each record set's shards, before and after
    each rename, between the record sets and the ledger and metrics, while the old record set is
    removed) and at two moments of its wall time, a stage leaves each output as the uninterrupted
    run wrote it or absent, and temporary files only under hidden names; the next run then gives
    every output byte for byte, with nothing left over."""
    baseline = request.getfixturevalue("large" if stage == "clean" else "small")
    workdir = copy_of(baseline, tmp_path, without=stage)
    for kill in kill_points(stage, baseline.traces[stage]):
        done = run_stage(workdir, stage, FAULT_KILL=kill.spec, FAULT_SHARD_ROWS=baseline.shard_rows[stage])
        assert done.returncode == KILLED, f"{kill} was not reached: exit {done.returncode}\n{done.stderr[-2000:]}"
        assert torn_outputs(workdir, baseline.files) == [], kill
    for fraction in (0.4, 0.8) if stage == "clean" else (0.6,):
        kill_after(workdir, stage, baseline.seconds[stage] * fraction, baseline.shard_rows[stage])
        assert torn_outputs(workdir, baseline.files) == [], f"killed after {fraction:.0%} of its time"
    done = run_stage(workdir, stage, FAULT_SHARD_ROWS=baseline.shard_rows[stage])
    assert done.returncode == 0, done.stderr[-3000:]
    assert _differences(snapshot(workdir), baseline.files) == []


def _differences(now: dict[str, str], expected: dict[str, str]) -> list[str]:
    return sorted(f"{p}: {now.get(p, 'absent')} != {expected.get(p, 'absent')}"
                  for p in set(now) | set(expected) if now.get(p) != expected.get(p))


@pytest.mark.slow
def test_dvc_repro_killed_mid_stage_then_rerun_gives_the_same_lock(tmp_path):
    """`dvc repro` SIGKILLed (DVC and the stage together) once split has spilled, then `dvc repro`
    again: it reruns split and records the same data hashes as an uninterrupted run of it (forced,
    in the same workspace)."""
    overlay = tmp_path / "small.yaml"
    demo_text = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"]["demo_text"]
    overlay.write_text(yaml.safe_dump({"datasets": {"demo_text": demo_text}, "engine": {"partition_rows": 100},
                                       "demo": {"text_records": 300, "image_records": 12}}))
    workdir = make_workspace(ROOT, overlay, tmp_path / "ws")
    target = "split@demo_text"
    _repro_killed_when(workdir, target, lambda: list((workdir / "data" / "demo_text").glob(".split-scratch-*/*")))
    again = dvc(workdir, "repro", target)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "Running stage 'split@demo_text'" in again.stdout and "Running stage 'dedup@demo_text'" not in again.stdout
    resumed = lock_outs(workdir / "dvc.lock")
    forced = dvc(workdir, "repro", "--force", "--single-item", target)
    assert forced.returncode == 0, forced.stdout[-2000:] + forced.stderr[-2000:]
    assert "Running stage 'split@demo_text'" in forced.stdout
    assert lock_outs(workdir / "dvc.lock") == resumed and resumed[target]


def _repro_killed_when(workdir: Path, target: str, started, timeout: float = 300) -> None:
    """Start `dvc repro target` and SIGKILL its whole process group once `started()` holds."""
    exe = ROOT / ".venv" / "bin" / "dvc"
    process = subprocess.Popen([str(exe), "repro", target], cwd=workdir, env={**os.environ, **RUN_ENV}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not started():
            assert process.poll() is None, f"dvc repro ended ({process.returncode}) before the kill point"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# --- 2. a full disk, an unwritable folder -----------------------------------------------------

def file_size_limit(limit: int):
    """A preexec_fn: files may not grow past `limit` bytes; writing more fails with EFBIG (SIGXFSZ
    ignored, else it would kill the process)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def assert_failed_cleanly(done: subprocess.CompletedProcess, workdir: Path, before: dict[str, str], reason: str) -> None:
    """Exit non-zero with one error line naming a path in the workspace and the reason, no
    traceback, and every file as it was (no partial output, no temporary file left)."""
    assert done.returncode != 0 and done.returncode != KILLED, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith(("ERROR", "CRITICAL"))]
    assert len(errors) == 1 and reason in errors[0], done.stderr[-3000:]
    named = re.search(r"cannot write (\S+):", errors[0])
    assert named and (workdir / named.group(1)).resolve().is_relative_to(workdir.resolve()), errors[0]
    assert _differences(snapshot(workdir), before) == []


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["clean", "split"])
def test_a_full_disk_fails_in_one_line_and_leaves_the_previous_outputs(stage, small, tmp_path):
    """Files capped (RLIMIT_FSIZE) at 4 KiB (the first spill fails) and at half the stage's largest
    output file (its spills may pass, its output fails): one line naming the file, no traceback,
    and the previous outputs as they were."""
    workdir, before = with_previous_outputs(small, tmp_path, stage)
    largest = max((workdir / p).stat().st_size for p in before if before[p] != "folder"
                  and any(p == o or p.startswith(o + "/") for o in stage_outputs(stage)))
    for limit in (4096, largest // 2):
        assert_failed_cleanly(plain_stage(workdir, stage, file_size_limit(limit)), workdir, before, "File too large")


def test_a_write_refused_for_space_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """Arrow's OSError names no file: one for want of space becomes a StorageError naming the
    target; an OSError of another kind (a bug, say) stays as it is."""
    def refused(table, where, **options):
        Path(where).write_bytes(b"PAR1")
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", refused)
    target = tmp_path / "ledger" / "clean.parquet"
    with pytest.raises(StorageError, match=rf"^cannot write {re.escape(str(target))}: No space left on device"):
        write_table(pa.table({"id": ["a"]}), target)
    assert list(target.parent.iterdir()) == []
    monkeypatch.setattr(pq, "write_table", lambda *args, **options: os.stat(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError):
        write_table(pa.table({"id": ["a"]}), target)


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """`folder` made unwritable: by its mode, or for root, whom modes do not stop, immutable
    (chattr +i); skips, saying why, where neither holds."""
    chattr = os.geteuid() == 0 and shutil.which("chattr")
    if chattr:
        subprocess.run([chattr, "+i", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
    try:
        if _writable(folder):
            pytest.skip(f"cannot make {folder} read-only: root ignores its mode, and chattr +i is missing or did not take")
        yield
    finally:
        if chattr:
            subprocess.run([chattr, "-i", str(folder)], capture_output=True)
        else:
            folder.chmod(0o755)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "folder"), [("clean", "data/t"), ("split", "data/t/ledger")])
def test_an_unwritable_output_folder_fails_in_one_line(stage, folder, small, tmp_path):
    """Clean's output folder read-only (it cannot even make its scratch folder), or split's ledger
    folder read-only (it fails last, after its record sets and metrics): one line naming the
    path, no traceback, the previous outputs as they were."""
    workdir, before = with_previous_outputs(small, tmp_path, stage)
    with read_only(workdir / folder):
        done = plain_stage(workdir, stage, None)
    reason = "Permission denied" if os.geteuid() else "Operation not permitted"
    assert_failed_cleanly(done, workdir, before, reason)


# --- 3. a memory limit smaller than the input -------------------------------------------------

def test_a_memory_error_is_one_line_saying_what_bounds_memory(tmp_path, caplog):
    """A MemoryError names no file: the stage says what bounds its memory, in one line."""
    def run(ctx):
        raise MemoryError

    argv = ["--dataset", "t", "--params", str(write_params(tmp_path / "params.yaml")), "--metrics", str(tmp_path / "m.json")]
    with caplog.at_level(logging.ERROR):
        assert stage_main("probe", "Probe.", lambda parser: None, run, argv) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None, errors
    assert "out of memory" in errors[0].getMessage() and "engine.partition_rows" in errors[0].getMessage()
    assert not (tmp_path / "m.json").exists()


MEMORY_MARGIN = 128 * 2**20  # address space allowed above what the stage needs for a tiny input
LONG_TEXT_PARAMS = {"clean": {"text": {"max_chars": 1_000_000, "repair_mojibake": False, "unescape_html": False,
                                       "strip_invisible": False}}}


def write_long_corpus(workdir: Path, size: int) -> int:
    """A TSV of `size` bytes or more of long messages (60 demo messages joined, about 7 KB each),
    cheap to clean (no repairs), and params for it; returns its records."""
    short = [text for _, text in demo_texts(2_000, 7)]
    written, index = 0, 0
    with (workdir / "corpus.tsv").open("w", encoding="utf-8") as out:
        out.write("label\ttext\n")
        while written < size:
            line = f"{DATASET['labels'][index % 3]}\t{' '.join(short[(index * 31 + k) % len(short)] for k in range(60))} #{index}\n"
            written += out.write(line)
            index += 1
    params = {"datasets": {"t": DATASET}, "engine": {"partition_rows": 2_000}, **LONG_TEXT_PARAMS}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return index


READ_WHOLE = "import pandas as pd, pipeline.stages.clean; pd.read_csv('corpus.tsv', sep='\\t')"


def ran_out_of_memory(stderr: str) -> bool:
    """pandas' C tokenizer reports "C error: out of memory"; its converters raise MemoryError."""
    return "out of memory" in stderr or stderr.rstrip().endswith("MemoryError")


def address_space_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


@pytest.mark.slow
def test_data_stages_stream_a_corpus_larger_than_their_memory_headroom(tmp_path):
    """RLIMIT_AS counts address space the libraries reserve before any data (about 2.2 GB here),
    so the limit is what clean and normalise reach on a tiny input plus MEMORY_MARGIN, and the
    corpus is twice that margin: read whole into pandas it does not fit under the limit, yet both
    stages finish with every record (they stream it in partitions), without a traceback.

    Arrow's allocator reserves 1 GiB of address space up front, so Arrow buffers (not Python
    objects) up to that much fit under the limit anyway: the limit proves no more about them."""
    tiny, big = tmp_path / "tiny", tmp_path / "big"
    tiny.mkdir()
    big.mkdir()
    write_long_corpus(tiny, 100_000)
    peaks = []
    for stage in ("clean", "normalise"):
        done = run_stage(tiny, stage, FAULT_VMPEAK=tmp_path / "peak")
        assert done.returncode == 0, done.stderr[-3000:]
        peaks.append(int((tmp_path / "peak").read_text()) * 1024)
    limit = max(peaks) + MEMORY_MARGIN
    records = write_long_corpus(big, 2 * MEMORY_MARGIN)
    whole = subprocess.run([sys.executable, "-c", READ_WHOLE], cwd=big, env=harness_env(), capture_output=True, text=True,
                           preexec_fn=address_space_limit(limit))
    assert whole.returncode != 0 and ran_out_of_memory(whole.stderr), f"the corpus fits under {limit / 2**30:.2f} GiB"
    for stage in ("clean", "normalise"):
        done = plain_stage(big, stage, address_space_limit(limit))
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        assert done.returncode == 0, f"limit {limit / 2**30:.2f} GiB: {done.stderr[-3000:]}"
        assert record_count(big / "data" / "t" / f"{stage}.parquet") == records
