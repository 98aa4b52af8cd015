"""The command lines a user meets: every stage's --help, `pipeline info`, and params overlays."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline import cli
from pipeline.errors import ParamsError
from pipeline.workspace import merge, overlay_params

STAGES = ["demo", "clean", "normalise", "dedup", "split", "augment", "rebalance", "finetune", "evaluate"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_has_help(stage, capsys):
    """`python -m pipeline.stages.<stage> --help` describes the stage and its options."""
    module = importlib.import_module(f"pipeline.stages.{stage}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"pipeline.stages.{stage}" in out and "--params" in out


@pytest.mark.slow  # a fresh interpreter importing the stage; dvc repro in the e2e tests runs the same entry
def test_stage_help_as_a_real_process():
    """The module entry point works from a shell, as dvc.yaml calls it."""
    result = subprocess.run([sys.executable, "-m", "pipeline.stages.split", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "--input" in result.stdout


def test_pipeline_info_lists_stages_and_datasets(capsys):
    assert cli.main(["--project", str(ROOT), "info"]) == 0
    out = capsys.readouterr().out
    for name in STAGES + ["demo_text", "demo_images"]:
        assert name in out


def test_overlay_replaces_datasets_and_merges_sections():
    base = {"datasets": {"a": {"x": 1}}, "finetune": {"threads": 2, "text": {"epochs": 3, "lr": 1}}}
    overlay = {"datasets": {"b": {"y": 2}}, "finetune": {"text": {"epochs": 1}}}
    assert merge(base, overlay) == {"datasets": {"b": {"y": 2}}, "finetune": {"threads": 2, "text": {"epochs": 1, "lr": 1}}}


def test_overlay_sources_are_rerooted_at_the_workspace(tmp_path):
    """A source outside the project stays the same file seen from the workspace; one inside it
    (like the demo corpora, which the workspace generates itself) stays project-relative."""
    overlay = tmp_path / "o.yaml"
    datasets = {"out": {"modality": "text", "source": "../elsewhere/x.tsv", "format": "tsv"},
                "in": {"modality": "text", "source": "data/raw/demo_text/corpus.tsv", "format": "tsv"},
                "url": {"modality": "text", "source": "s3://bucket/corpus", "files": "*.tsv", "format": "tsv"}}
    overlay.write_text(yaml.safe_dump({"datasets": datasets}))
    workdir = tmp_path / "ws"
    params = overlay_params(ROOT, overlay, workdir)
    assert (workdir / params["datasets"]["out"]["source"]).resolve() == (ROOT / "../elsewhere/x.tsv").resolve()
    assert params["datasets"]["in"]["source"] == "data/raw/demo_text/corpus.tsv"
    assert params["datasets"]["url"]["source"] == "s3://bucket/corpus"


def test_bad_overlay_is_a_params_error(tmp_path):
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"split": {"train": 2.0}}))
    with pytest.raises(ParamsError, match="split"):
        overlay_params(ROOT, overlay, tmp_path / "ws")


def test_calibrate_scores_the_configured_settings_on_labelled_pairs(tmp_path, capsys):
    """Pairs are normalised as the pipeline would; the JSON gives precision, recall and a suggestion."""
    import json

    pairs = tmp_path / "pairs.csv"
    pairs.write_text("text_a,text_b,is_duplicate\n"
                     "the parcel never arrived at my door,the  parcel never arrived at my door,1\n"
                     "please refund the second charge,where is my parcel today,0\n"
                     "my router keeps dropping the connection,my router keeps dropping the connection!,yes\n")
    assert cli.main(["--project", str(ROOT), "calibrate", str(pairs)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 3 and report["duplicates"] == 2
    assert report["configured"]["precision"] == 1.0 and report["configured"]["recall"] == 1.0
    assert report["suggested"]["precision"] >= 0.98


def test_calibrate_names_missing_columns(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("a,b\nx,y\n")
    assert cli.main(["--project", str(ROOT), "calibrate", str(pairs)]) == 2


def test_workspace_repro_from_a_relative_folder(tmp_path, monkeypatch):
    """`pipeline workspace ... --dir build/real-data` (relative, as the README has it) finds the
    workspace's dvc from inside the workspace, where dvc repro runs."""
    from pipeline.workspace import GIT_ENV, repro

    workdir = tmp_path / "ws"
    workdir.mkdir()
    (workdir / ".venv").symlink_to((ROOT / ".venv").resolve(), target_is_directory=True)
    (workdir / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs: [out.txt]\n")
    env = {**GIT_ENV, "DVC_NO_ANALYTICS": "1", "PATH": "/usr/bin:/bin"}
    for cmd in (["git", "init", "-q"], [str(ROOT / ".venv" / "bin" / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=workdir, env=env, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no dvc on PATH: only the workspace's own will do
    assert repro(Path("ws")) == 0
    assert (workdir / "out.txt").read_text() == "hi\n"
