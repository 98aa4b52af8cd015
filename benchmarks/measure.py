"""Measuring helpers shared by the benchmark scripts: wall and CPU time, peak resident memory."""
from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process and its workers)."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - start, cpu_seconds() - cpu


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
