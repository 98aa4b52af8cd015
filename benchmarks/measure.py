"""Measuring helpers shared by the benchmark scripts: wall and CPU time, peak resident memory, peak allocation."""
from __future__ import annotations

import contextlib
import gc
import resource
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process and its workers)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - start, cpu_seconds() - cpu


def traced(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, peak MiB that `fn` allocated on top of what was allocated before), by tracemalloc:
    Python objects and numpy buffers (numpy reports them to it), not BLAS's own work space."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, (peak - before) / 2**20


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the engine's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def reset_peak() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process; False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_kib(field: str) -> int:
    """A KiB field of /proc/self/status (VmRSS, VmHWM), or ru_maxrss where it is absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """(result, wall seconds, peak RSS MiB during the call, that peak minus the RSS before it, MiB).

    The kernel's peak is reset first where allowed; elsewhere the peak is the process's so far.
    """
    gc.collect()
    reset = reset_peak()
    before = status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result, seconds, round(peak / 1024, 1), round((peak - before) / 1024, 1)


def child_json(script: str | Path, args: list[str]) -> dict[str, Any]:
    """Run `script args` in a fresh interpreter (so its peak memory is its own) and parse the JSON of
    its last line; a failure exits with the child's error output."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(Path(script).resolve()), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{Path(script).name} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the data stages, run for real ----------------------------------------------------------

def stage_argv(folder: Path, names: tuple[str, ...]) -> dict[str, list[str]]:
    """The arguments of each data stage of `names`, on `folder/data` from the source under `folder`."""
    data, out = folder / "data", folder / "out"
    args = {
        "clean": ["--output", str(data / "clean.parquet"), "--root", str(folder)],
        "normalise": ["--input", str(data / "clean.parquet"), "--output", str(data / "normalise.parquet")],
        "dedup": ["--input", str(data / "normalise.parquet"), "--output", str(data / "dedup.parquet")],
        "split": ["--input", str(data / "dedup.parquet"), "--output", str(data / "split"), "--leakage", str(out / "leakage.json")],
    }
    return {name: [*args[name], "--metrics", str(out / f"{name}.json"), "--ledger", str(out / f"{name}.ledger.parquet")]
            for name in names}


def run_stages(folder: Path, params: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The real stages `names` one after the other, dataset `bench` of `params`, each in a process
    of its own as `dvc repro` runs them: seconds, peak RSS and record counts per stage."""
    import json

    report: dict[str, Any] = {}
    for name, args in stage_argv(folder, names).items():
        code, seconds, peak = stage_process(name, ["--dataset", "bench", "--params", str(params), *args])
        if code != 0:
            raise SystemExit(f"stage {name} failed with exit code {code}")
        metrics = json.loads((folder / "out" / f"{name}.json").read_text())
        report[name] = {"seconds": round(seconds, 2), "peak_rss_mib": peak, "in": metrics["in"], "out": metrics["out"],
                        "merged": metrics["merged"], "dropped": sum(metrics["dropped"].values())}
    return report


# Starts a command and reports its exit code and peak RSS (KiB). A process's peak starts from the
# memory of the process it was forked from (the kernel carries the old image's high-water mark
# across exec), so the stage is started from this small launcher, not from the benchmark, which
# may hold a whole generated corpus.
LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def stage_process(name: str, argv: list[str]) -> tuple[int, float, float]:
    """Run `python -m pipeline.stages.<name> argv` in a fresh process: (exit code, wall seconds, its
    peak RSS in MiB, from the kernel's accounting of that process alone)."""
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, report.name, sys.executable, "-m", f"pipeline.stages.{name}", *argv],
                       cwd=Path(__file__).resolve().parents[1], check=True)
        seconds = time.perf_counter() - start
        code, peak_kib = (int(v) for v in Path(report.name).read_text().split())
    return code, seconds, round(peak_kib / 1024, 1)


@contextlib.contextmanager
def bench_engine(kind: str, partition_rows: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(`engine` params, worker figures) for `kind`: local, or a LocalCluster of 2 worker processes
    of 3 GB each that the stages join by its address. The worker figures are filled on exit, before
    the cluster closes: each worker's peak RSS over the run (`worker_peak_rss_mib`)."""
    engine: dict[str, Any] = {"partition_rows": partition_rows}
    workers: dict[str, Any] = {}
    if kind != "dask":
        yield engine, workers
        return
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="3GB", dashboard_address=None)
    engine.update(kind="dask", dask={"scheduler_address": cluster.scheduler_address})
    try:
        yield engine, workers
        with Client(cluster) as client:
            peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        workers["worker_peak_rss_mib"] = sorted(round(v / 1024, 1) for v in peaks.values())
    finally:
        cluster.close()


def engine_ratios(runs: list[dict[str, Any]], kinds: list[str], size: str) -> dict[str, Any]:
    """Across sizes (the run key `size`), per engine kind: the size, time and peak RSS ratios of the
    largest to the smallest; with both kinds, per size, dask's time over local's and whether their
    outputs are the same bytes (`digest`)."""
    report: dict[str, Any] = {}
    for kind in kinds:
        mine = [r for r in runs if r["engine"] == kind]
        if len(mine) > 1:
            small, large = mine[0], mine[-1]
            report[f"{kind}_size_ratio"] = round(large[size] / small[size], 2)
            report[f"{kind}_time_ratio"] = round(large["seconds"] / small["seconds"], 2)
            report[f"{kind}_peak_rss_ratio"] = round(large["peak_rss_mib"] / small["peak_rss_mib"], 2)
            if kind == "dask":
                report["dask_worker_peak_ratio"] = round(max(large["worker_peak_rss_mib"]) / max(small["worker_peak_rss_mib"]), 2)
    if len(kinds) == 2:
        for n in sorted({r[size] for r in runs}):
            local, dask_run = (next(r for r in runs if r[size] == n and r["engine"] == k) for k in kinds)
            report[f"dask_over_local_time_{n}"] = round(dask_run["seconds"] / local["seconds"], 2)
            report[f"same_bytes_{n}"] = dask_run["digest"] == local["digest"]
    return report
