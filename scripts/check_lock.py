"""Compare the working dvc.lock with the committed one: every output must match exactly.

The model stages (features, finetune, baselines, evaluate, report) give the same bytes on any x86-64
CPU too, with `finetune.portable` (the default: their float kernels pinned, see the README's
Reproducibility). Exit 1 when any output differs; a difference names the stages and this machine's
CPU. `--data-only` checks the data stages alone, for params that set `portable: false`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import yaml

MODEL_STAGES = ("features", "finetune", "baselines", "evaluate", "report")


def outs(lock: dict) -> dict[str, list]:
    return {name: sorted((o["path"], o.get("md5")) for o in stage.get("outs", [])) for name, stage in lock.get("stages", {}).items()}


def cpu_name() -> str:
    """This machine's CPU model, as /proc/cpuinfo names it (or the platform's word for it)."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--data-only", action="store_true", help="report model differences without failing")
    args = parser.parse_args()
    committed = yaml.safe_load(subprocess.run(["git", "show", f"{args.rev}:dvc.lock"], capture_output=True, text=True, check=True).stdout)
    with open("dvc.lock") as fh:
        working = yaml.safe_load(fh)
    old, new = outs(committed), outs(working)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    models = [k for k in changed if k.split("@")[0] in MODEL_STAGES]
    data = [k for k in changed if k not in models]
    if models:
        print(f"model outputs differ from {args.rev} on this CPU ({cpu_name()}): {models}")
    if data or (models and not args.data_only):
        print(f"FAIL: outputs differ from {args.rev}: {data + ([] if args.data_only else models)}")
        return 1
    print(f"dvc.lock outputs match {args.rev}" + (" (data stages)" if models else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
