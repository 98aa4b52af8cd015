"""What every stage shares: its command line, params loading, timing, ledger and metrics.

A stage module supplies `add_arguments(parser)` for its paths and `run(ctx) -> Outcome` with
the work; `stage_main` does the rest, and turns user-facing errors (`pipeline.errors.UserError`)
into one clear message and a non-zero exit instead of a traceback. Any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import OutOfMemory, UserError
from pipeline.io import write_json, write_table
from pipeline.ledger import Ledger
from pipeline.params import DatasetParams, FinetuneParams, Params, load_params

if TYPE_CHECKING:
    from pipeline.engines import Engine

log = logging.getLogger(__name__)
# The environment every stage process runs in, fixed before it starts (libraries read these when
# they load): set order reproducible, no hub or update checks, quiet transformers. A value the
# user set wins, except PYTHONHASHSEED, which decides set order and so the output bytes.
PINNED_ENV = {"PYTHONHASHSEED": "0"}
DEFAULT_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "NO_ALBUMENTATIONS_UPDATE": "1"}
# With `finetune.portable` (the default), forced too: the CPU float kernels of every library, pinned
# to ones every x86-64 CPU of the last ten years runs (AVX2), chosen alike on Intel and AMD. Left to
# themselves they pick by CPU type, and the model stages' bytes follow. Measured with probes under
# QEMU's Intel Haswell and Skylake and AMD EPYC-Rome CPUs against an AMD EPYC with AVX-512 (and the
# stages themselves in tests/test_portable.py): MKL's GEMM takes another path on Intel than on AMD,
# torch's and oneDNN's kernels and numpy's exp and log follow AVX-512, and OpenBLAS takes SkylakeX
# kernels on AVX-512 Intel CPUs.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels
    "MKL_CBWR": "COMPATIBLE",  # MKL's reproducible branch: the one it keeps on AMD too (it refuses AVX2 there)
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's JIT kernels (torch's convolutions)
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's OpenBLAS (scikit-learn's baselines)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # numpy's AVX-512 loops
}


@dataclass(slots=True)
class Context:
    """What a stage's `run` gets: its arguments, the validated params, its dataset and ledger."""

    args: argparse.Namespace
    params: Params
    name: str
    dataset: DatasetParams
    ledger: Ledger
    engine: Engine | None = None  # the data stages' (`uses_engine`): partitions, steps over them, writes


@dataclass(slots=True)
class Outcome:
    """Record counts a stage reports; extra metrics go beside the standard ones."""

    n_in: int
    n_out: int
    extra: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)  # wall-clock seconds of parts, beside the stage's


def parser_for(stage: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every stage takes."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.stages.{stage}", description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--dataset", required=True, help="dataset name, a key of params 'datasets'")
    parser.add_argument("--params", default="params.yaml", type=Path, help="params file (default: params.yaml)")
    parser.add_argument("--metrics", required=True, type=Path, help="where to write this stage's metrics JSON")
    parser.add_argument("--ledger", type=Path, help="where to write this stage's per-record ledger (Parquet)")
    parser.add_argument("--timings", type=Path,
                        help="where to write its wall-clock seconds (JSON), kept out of the metrics so they repeat")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def stage_main(
    stage: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[Context], Outcome],
    argv: list[str] | None = None,
    *,
    engine: Callable[..., contextlib.AbstractContextManager[Engine]] | None = None,
) -> int:
    """Parse, load params, run, account and write metrics; return the exit code.

    A data stage passes `engine=pipeline.engines.open_engine` and gets `ctx.engine`, whose scratch
    folder sits beside its `--output` (model stages never load the engine).
    """
    parser = parser_for(stage, doc)
    add_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        with contextlib.ExitStack() as stack:
            opened = stack.enter_context(engine(params.engine, args.output.parent, stage)) if engine else None
            ctx = Context(args, params, args.dataset, params.dataset(args.dataset), Ledger(stage), opened)
            outcome = run(ctx)
            metrics = _finish(ctx, outcome, started)
    except UserError as exc:
        log.error("%s@%s failed: %s", stage, args.dataset, exc.in_params(args.params, args.dataset))
        return exc.exit_code
    except MemoryError as exc:  # names no file: say what bounds a stage's memory
        error = OutOfMemory(f"out of memory ({type(exc).__name__}: {exc}): lower engine.partition_rows or raise the memory limit")
        log.error("%s@%s failed: %s", stage, args.dataset, error)
        return error.exit_code
    log.info("%s@%s: in %d, out %d, dropped %s", stage, args.dataset, outcome.n_in, outcome.n_out, metrics["dropped"])
    return 0


def _finish(ctx: Context, outcome: Outcome, started: float) -> dict[str, Any]:
    """The balanced account as the stage's metrics, and the ledger, written."""
    metrics = ctx.ledger.account(n_in=outcome.n_in, n_out=outcome.n_out, extra=outcome.extra)
    write_json(metrics, ctx.args.metrics)
    if ctx.args.timings:
        write_json({"seconds": round(time.perf_counter() - started, 3), **outcome.timings}, ctx.args.timings)
    if ctx.args.ledger:
        write_table(ctx.ledger.table(), ctx.args.ledger)
    return metrics


def prefixed(counts: Mapping[str, int], prefix: str) -> dict[str, int]:
    """The counts under `prefix.` (as a step names them), by the rest of their key, sorted."""
    start = len(prefix) + 1
    return {key[start:]: int(n) for key, n in sorted(counts.items()) if key.startswith(f"{prefix}.")}


def configure_logging(verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG with --verbose); handlers a caller installed are kept."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("PIL", "urllib3", "filelock", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage_environment(environ: dict[str, str], *, portable: bool = True, threads: int = 2) -> dict[str, str]:
    """`environ` with the stage defaults filled in and the pinned values forced: with `portable`,
    the CPU float kernels too, and OpenBLAS's thread count (`threads`, as torch's: it changes bits)."""
    kernels = {**PORTABLE_ENV, "OPENBLAS_NUM_THREADS": str(threads)} if portable else {}
    return {**DEFAULT_ENV, **environ, **PINNED_ENV, **kernels}


def kernel_settings(argv: list[str]) -> dict[str, Any]:
    """`portable` and `threads` of params `finetune`, from the params file a stage's `argv` names
    (the defaults where it cannot be read: the stage then says why)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--params", default="params.yaml", type=Path)
    known, _ = parser.parse_known_args(argv)
    try:
        finetune = load_params(known.params).finetune
    except UserError:
        finetune = FinetuneParams()
    return {"portable": finetune.portable, "threads": finetune.threads}


def entry(module: str, main: Callable[[], int]) -> None:
    """Run `main` as a script, first re-executing in the stage environment if this process lacks it."""
    env = stage_environment(dict(os.environ), **kernel_settings(sys.argv[1:]))
    if env != dict(os.environ):
        os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)
    sys.exit(main())
