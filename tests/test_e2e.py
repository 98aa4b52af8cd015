"""End to end: the real pipeline under real DVC, in a fresh git repository made from this checkout.

The demo is shrunk by a params overlay so the run takes a minute or two; every stage still runs
on both modalities, and the checks are those a user and CI rely on.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from contract import ENGINES, RUN_ENV, dvc, leaks, lock_outs, rerun_data_stages_on, unbalanced
from conftest import ROOT
from pipeline.workspace import make_workspace

pytestmark = pytest.mark.slow

SMALL_DEMO = {
    "demo": {"text_records": 160, "image_records": 90},
    "finetune": {"text": {"epochs": 1}, "image": {"epochs": 1}},
    # One epoch on a shrunken demo is not held to the model-quality gates (tests/test_report.py
    # covers gates that fail a run); here they still run and are reported.
    "gates": {"warn_only": True},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A workspace of this checkout with the small demo, after one `dvc repro`."""
    base = tmp_path_factory.mktemp("e2e")
    overlay = base / "small.yaml"
    demo = yaml.safe_load((ROOT / "params.yaml").read_text())["datasets"]
    overlay.write_text(yaml.safe_dump({"datasets": demo, **SMALL_DEMO}))
    workdir = make_workspace(ROOT, overlay, base / "ws")
    result = dvc(workdir, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.copy(workdir / "dvc.lock", base / "first.lock")
    git(workdir, "add", "-A")
    git(workdir, "commit", "-qm", "first version")
    return workdir


def git(workdir: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=workdir, env={**os.environ, **RUN_ENV}, check=True, capture_output=True)


def test_every_stage_ran_for_every_dataset(run):
    """dvc.yaml's foreach gives each stage once per dataset, and each wrote its metrics."""
    stages = {name for name, spec in yaml.safe_load((run / "dvc.yaml").read_text())["stages"].items() if "foreach" in spec}
    assert {"clean", "normalise", "dedup", "split", "augment", "rebalance", "finetune", "evaluate"} <= stages
    for dataset in ("demo_text", "demo_images"):
        written = {p.stem for p in (run / "metrics" / dataset).glob("*.json")}
        assert written == stages, dataset


def test_nothing_is_lost(run):
    """in + generated == out + merged + sum(dropped) for every stage of every dataset."""
    assert unbalanced(run / "metrics") == []


def test_no_leakage_in_final_splits(run):
    """No id or group on two sides; generated records and their parents only in train."""
    for dataset in ("demo_text", "demo_images"):
        assert leaks(run / "data" / dataset / "final") == [], dataset


def test_final_dataset_card_and_model(run):
    """The card names the version; the model card names the same version; evaluate reports scores."""
    for dataset in ("demo_text", "demo_images"):
        card = json.loads((run / "data" / dataset / "final" / "card.json").read_text())
        model_card = json.loads((run / "models" / dataset / "card.json").read_text())
        assert model_card["dataset_version"] == card["version"]
        assert (run / "models" / dataset / "model.safetensors").stat().st_size > 1_000_000
        scores = json.loads((run / "metrics" / dataset / "evaluate.json").read_text())
        assert 0.0 <= scores["macro_f1"] <= 1.0 and set(scores["per_class"]) == set(card["classes"]["test"])



def test_demo_metadata_is_filtered_and_prepared_on_train_alone(run):
    """The text demo's metadata columns: low confidences filtered by clean, the unparseable date
    dropped by prepare, blanks imputed, and fitted.json's statistics those of train's values alone."""
    data, metrics = run / "data" / "demo_text", run / "metrics" / "demo_text"
    assert json.loads((metrics / "clean.json").read_text())["dropped"]["filtered:confidence"] > 0
    values = {split: [json.loads(m) for m in pq.read_table(data / "split" / f"{split}.parquet", columns=["metadata"])
                      .column("metadata").to_pylist()] for split in ("train", "val", "test")}
    bad_dates = sum(m["created"][5:7] > "12" for rows in values.values() for m in rows)
    prepare = json.loads((metrics / "prepare.json").read_text())
    assert prepare["dropped"].get("unparseable:created", 0) == bad_dates
    counts = prepare["values"]
    for column in ("channel", "replies"):
        blanks = sum(m[column] == "" for rows in values.values() for m in rows)
        assert counts[f"{column}:missing"] == counts[f"{column}:imputed"] == blanks > 0, column
    fitted = {c["spec"]["name"]: c for c in json.loads((data / "metadata" / "fitted.json").read_text())["columns"]}
    train_replies = [float(m["replies"]) for m in values["train"] if m["replies"] != ""]
    assert fitted["replies"]["summary"]["median"] == float(np.median(train_replies))
    train_confidence = np.array([float(m["confidence"]) for m in values["train"]])
    assert fitted["confidence"]["center"] == pytest.approx(train_confidence.mean(), rel=1e-12)
    assert fitted["confidence"]["summary"]["count"] == len(train_confidence)
    final = data / "final"
    for split in ("train", "val", "test"):
        ids = pq.read_table(final / "metadata" / f"{split}.parquet").column("id").to_pylist()
        assert ids == pq.read_table(final / f"{split}.parquet", columns=["id"]).column("id").to_pylist(), split
    assert "metadata_probe" in json.loads((metrics / "baselines.json").read_text())["baselines"]
    assert "metadata_probe" not in json.loads((run / "metrics" / "demo_images" / "baselines.json").read_text())["baselines"]

def test_second_repro_runs_nothing(run):
    """With nothing changed, dvc repro runs no stage and leaves dvc.lock as it was."""
    result = dvc(run, "repro")
    assert result.returncode == 0
    assert "Running stage" not in result.stdout
    assert (run / "dvc.lock").read_text() == (run.parent / "first.lock").read_text()


def test_forced_repro_gives_the_same_lock(run):
    """dvc repro --force recomputes everything, model included, to the same dvc.lock, deps and all,
    and leaves every tracked file (the metrics too) as committed: only the clock changed."""
    result = dvc(run, "repro", "--force")
    assert result.returncode == 0, result.stderr[-2000:]
    assert lock_outs(run / "dvc.lock") == lock_outs(run.parent / "first.lock")
    assert (run / "dvc.lock").read_text() == (run.parent / "first.lock").read_text()
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=run, capture_output=True, text=True, check=True).stdout
    assert changed == "", changed


@pytest.mark.parametrize("engine", ENGINES.values(), ids=ENGINES.keys())
def test_engine_settings_rerun_nothing_and_change_no_byte(run, engine):
    """No stage depends on `engine` (it never changes an output): a switch reruns nothing, and the
    data stages forced to run again on local processes or a Dask LocalCluster, in other partition
    sizes, give the same bytes as the first run."""
    datasets = list(yaml.safe_load((run / "params.yaml").read_text())["datasets"])
    assert rerun_data_stages_on(run, engine, datasets) == lock_outs(run.parent / "first.lock")


def test_experiment_changes_only_what_depends_on_the_knob(run):
    """dvc exp run -S on one knob reruns its stage and those after it, and the experiment is listed."""
    result = dvc(run, "exp", "run", "-n", "half-ratio", "-S", "rebalance.ratio=0.5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Running stage 'rebalance@demo_text'" in result.stdout
    assert "Running stage 'split@demo_text'" not in result.stdout
    assert "half-ratio" in dvc(run, "exp", "list", "--name-only").stdout
    assert unbalanced(run / "metrics") == []


def test_data_diff_against_the_first_version(run):
    """After the experiment, `pipeline diff HEAD` shows train changed, test untouched, gate passing."""
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "diff", "HEAD", "--dataset", "demo_text"], cwd=run,
                            capture_output=True, text=True, env={**os.environ, **RUN_ENV})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| t")}
    assert rows["test"].endswith("| 0 | 0 | 0 | 0.00% |") and "| 0 | 0 | 0 | 0.00% |" not in rows["train"]
    assert "max_test_changed_fraction: 0.00%" in result.stdout


def test_remote_round_trip_then_repro_does_nothing(run, tmp_path):
    """dvc push to a local remote, a fresh clone, dvc pull, and dvc repro there runs nothing."""
    git(run, "add", "-A")
    git(run, "commit", "-qm", "after experiments", "--allow-empty")
    assert dvc(run, "remote", "add", "-d", "local", str(tmp_path / "remote")).returncode == 0
    git(run, "commit", "-qam", "remote")
    push = dvc(run, "push")
    assert push.returncode == 0, push.stderr[-2000:]
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(run), str(clone))
    (clone / ".venv").symlink_to((run / ".venv").resolve(), target_is_directory=True)
    pull = dvc(clone, "pull")
    assert pull.returncode == 0, pull.stderr[-2000:]
    again = dvc(clone, "repro")
    assert again.returncode == 0 and "Running stage" not in again.stdout, again.stdout[-2000:]


def test_sweep_through_the_dvc_queue(run):
    """A tiny grid queued with DVC's own experiments runs in DVC's temp copies; exp show lists both."""
    queued = dvc(run, "exp", "run", "--queue", "-S", "finetune.text.lr=0.0002,0.001")
    assert queued.returncode == 0, queued.stderr[-2000:]
    ran = dvc(run, "exp", "run", "--run-all", activated=True, timeout=1200)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    shown = dvc(run, "exp", "show", "--json")
    assert shown.returncode == 0, shown.stderr[-2000:]
    runs = [exp for commit in json.loads(shown.stdout) for exp in (commit.get("experiments") or [])]
    swept = {}
    for exp in runs:
        for revision in exp["revs"]:
            data = revision.get("data") or {}
            lr = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("finetune", {}).get("text", {}).get("lr")
            scores = data.get("metrics", {}).get("metrics/demo_text/evaluate.json", {}).get("data", {})
            if lr in (0.0002, 0.001) and "macro_f1" in scores:
                swept[lr] = scores["macro_f1"]
    assert set(swept) == {0.0002, 0.001}, shown.stdout[-3000:]
