"""Compare the working dvc.lock with the committed one: data outputs must match exactly.

Model stages (features, finetune, baselines, evaluate, report) may differ across CPU types (different SIMD kernels round
differently); on the same kind of machine they match too. Those differences are reported, not
failed, unless --strict is given. Exit 1 when a data output differs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import yaml

MODEL_STAGES = ("features", "finetune", "baselines", "evaluate", "report")


def outs(lock: dict) -> dict[str, list]:
    return {name: sorted((o["path"], o.get("md5")) for o in stage.get("outs", [])) for name, stage in lock.get("stages", {}).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--strict", action="store_true", help="fail on model differences too")
    args = parser.parse_args()
    committed = yaml.safe_load(subprocess.run(["git", "show", f"{args.rev}:dvc.lock"], capture_output=True, text=True, check=True).stdout)
    with open("dvc.lock") as fh:
        working = yaml.safe_load(fh)
    old, new = outs(committed), outs(working)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    models = [k for k in changed if k.split("@")[0] in MODEL_STAGES]
    data = [k for k in changed if k not in models]
    if models:
        print(f"model outputs differ from {args.rev} (expected only on another CPU type): {models}")
    if data or (args.strict and models):
        print(f"FAIL: outputs differ from {args.rev}: {data + (models if args.strict else [])}")
        return 1
    print(f"dvc.lock outputs match {args.rev}" + (" (data stages)" if models else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
