"""Checks of the pipeline's promises over a whole run, shared by the end-to-end tests.

Each check returns a list of problems (empty when the promise holds), so a failing test names them
all; `dvc` and `rerun_data_stages_on` run a workspace.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import yaml

from pipeline.io import read_records

SPLITS = ("train", "val", "test")
RUN_ENV = {
    "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
    "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def dvc(workdir: Path, *args: str, timeout: int = 1800, activated: bool = False) -> subprocess.CompletedProcess:
    """Run the project venv's dvc in `workdir`, capturing its output.

    `activated`: with the venv's bin first on PATH, as after `source .venv/bin/activate` (DVC's
    queue starts its workers as a bare `dvc` from PATH).
    """
    exe = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "dvc"
    env = {**os.environ, **RUN_ENV}
    if activated:
        env["PATH"] = f"{exe.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(exe), *args], cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)


def unbalanced(metrics_root: Path) -> list[str]:
    """Stage metrics where in + generated != out + merged + dropped, or a required key is missing."""
    problems = []
    for path in sorted(metrics_root.glob("*/*.json")):
        m = json.loads(path.read_text())
        missing = {"in", "out", "generated", "merged", "dropped"} - set(m)
        if missing:
            problems.append(f"{path}: missing {sorted(missing)}")
        elif m["in"] + m["generated"] != m["out"] + m["merged"] + sum(m["dropped"].values()):
            problems.append(f"{path}: {m['in']} + {m['generated']} != {m['out']} + {m['merged']} + {m['dropped']}")
    return problems


def final_splits(final: Path) -> dict[str, pd.DataFrame]:
    return {s: read_records(final / f"{s}.parquet") for s in SPLITS}


def leaks(final: Path) -> list[str]:
    """Ids or groups on two sides, generated records outside train, parents missing from train."""
    splits = final_splits(final)
    problems = []
    for column in ("id", "group_id"):
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1 :]:
                shared = set(splits[a][column]) & set(splits[b][column])
                if shared:
                    problems.append(f"{len(shared)} {column} in both {a} and {b}")
    for name in ("val", "test"):
        if splits[name]["parent_id"].notna().any():
            problems.append(f"generated records in {name}")
    train = splits["train"]
    originals = set(train.loc[train["parent_id"].isna(), "id"])
    orphans = set(train["parent_id"].dropna()) - originals
    if orphans:
        problems.append(f"{len(orphans)} parents that are not originals in train")
    return problems


def lock_outs(lock_path: Path) -> dict[str, list]:
    """Stage -> sorted (path, md5) of its outs, from a dvc.lock."""
    lock = yaml.safe_load(lock_path.read_text())
    return {k: sorted((o["path"], o["md5"]) for o in v.get("outs", [])) for k, v in lock["stages"].items()}


DATA_STAGES = ("clean", "normalise", "dedup", "split", "prepare", "augment", "rebalance")
ENGINES = {  # each against the first run: in process, one partition (partition_rows 100,000)
    "local-2-processes-64-rows": {"workers": 2, "partition_rows": 64, "chunk_size": 16},
    "dask-1-worker": {"kind": "dask", "dask": {"workers": 1, "memory_limit": "2GB"}},
    "dask-2-workers-40-rows": {"kind": "dask", "partition_rows": 40, "dask": {"workers": 2, "memory_limit": "2GB"}},
}


def rerun_data_stages_on(workdir: Path, engine: dict, datasets: list[str]) -> dict[str, list]:
    """Switch `engine` (which reruns nothing), force the data stages of `datasets` on it, and
    return dvc.lock's outs; params, lock and metrics are put back afterwards."""
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["engine"] = {**params.get("engine", {}), **engine}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = dvc(workdir, "repro")
        assert result.returncode == 0 and "Running stage" not in result.stdout, result.stdout[-2000:]
        stages = [f"{stage}@{name}" for stage in DATA_STAGES for name in datasets]
        result = dvc(workdir, "repro", "--force", "--single-item", *stages, timeout=3000)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert all(f"Running stage '{stage}'" in result.stdout for stage in stages)
        return lock_outs(workdir / "dvc.lock")
    finally:  # the same data, so the committed lock and metrics hold again
        subprocess.run(["git", "checkout", "--", "params.yaml", "dvc.lock", "metrics"], cwd=workdir, check=True, capture_output=True)
