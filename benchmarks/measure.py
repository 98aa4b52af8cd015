"""Measuring helpers shared by the benchmark scripts: wall and CPU time, peak resident memory."""
from __future__ import annotations

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
