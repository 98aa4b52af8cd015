"""The pipeline on the real public corpora in ../shared/datasets, through the documented overlay.

This is the one-command real-data run of the README (`pipeline workspace overlays/real-data.yaml`),
checked against the corpora's known quirks. Skipped, with the reason, where ../shared is absent.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from contract import RUN_ENV, dvc, final_splits, leaks, lock_outs, rerun_data_stages_on, unbalanced
from conftest import ROOT, SHARED
from pipeline.io import read_records
from pipeline.workspace import make_workspace

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not found at {SHARED} (present beside the checkout in CI)"),
]
C1 = "[\x80-\x9f]"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    workdir = make_workspace(ROOT, ROOT / "overlays" / "real-data.yaml", tmp_path_factory.mktemp("real") / "ws")
    result = dvc(workdir, "repro", timeout=3000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def metrics(run: Path, dataset: str, stage: str) -> dict:
    return json.loads((run / "metrics" / dataset / f"{stage}.json").read_text())


def test_nothing_lost_and_nothing_leaked(run):
    assert unbalanced(run / "metrics") == []
    for dataset in ("sms", "hymenoptera"):
        assert leaks(run / "data" / dataset / "final") == [], dataset


def test_sms_every_row_read_and_duplicates_merged(run):
    """5,574 messages in; the 414 exact duplicates after whitespace stripping (403 as stored) merged."""
    clean, dedup = metrics(run, "sms", "clean"), metrics(run, "sms", "dedup")
    assert clean["in"] == 5574
    assert dedup["merged"] >= 414
    assert dedup["label_conflicts"] == 0
    ledger = pq.read_table(run / "data" / "sms" / "ledger" / "dedup.parquet").to_pandas()
    kept = set(read_records(run / "data" / "sms" / "dedup.parquet")["id"])
    assert set(ledger["into"]) <= kept  # every merged message names a surviving one


def test_sms_c1_controls_repaired(run):
    """The 35 rows with C1 control characters (cp1252 read as Latin-1) are repaired, none left."""
    raw = pd.read_csv(SHARED / "sms_spam" / "SMSSpamCollection", sep="\t", quoting=3, dtype=str)
    assert raw["SMS"].str.contains(C1).sum() == 35
    for name, frame in final_splits(run / "data" / "sms" / "final").items():
        assert not frame["text"].str.contains(C1).any(), name


def test_hymenoptera_every_file_accounted_and_source_split_kept(run):
    """398 files in; the source's val folder is the test split; the GIF placeholder is decoded."""
    clean = metrics(run, "hymenoptera", "clean")
    assert clean["in"] == 398 and clean["out"] + sum(clean["dropped"].values()) == 398
    assert metrics(run, "hymenoptera", "dedup")["merged"] == 0  # no duplicates where there are none
    final = final_splits(run / "data" / "hymenoptera" / "final")
    assert set(final["test"]["source_split"]) == {"val"} and len(final["test"]) == 153
    assert set(final["val"]["source_split"]) == {"train"} and set(final["train"]["source_split"]) == {"train"}
    records = read_records(run / "data" / "hymenoptera" / "normalise.parquet")
    gif = records[records["source"] == "train/ants/imageNotFound.gif"]
    assert len(gif) == 1 and gif["width"].iloc[0] == 224


def test_models_trained_and_scored(run):
    """Both models are trained on their corpus, scored on its test split, and set beside the baselines."""
    for dataset in ("sms", "hymenoptera"):
        scores = metrics(run, dataset, "evaluate")
        assert scores["in"] == len(final_splits(run / "data" / dataset / "final")["test"])
        assert scores["accuracy"] > 0.85, (dataset, scores["accuracy"])
        assert {"linear_probe", "random_init"} <= set(scores["baselines"]) and "ece" in scores and "roc_auc" in scores


def test_fine_tuning_beats_its_baselines_on_hymenoptera(run):
    """Accuracy >= 0.95 on the source's own val (measured 0.961; the linear probe gets 0.948)."""
    images = metrics(run, "hymenoptera", "evaluate")
    assert images["accuracy"] >= 0.95 and images["not_beaten"] == [], images["baselines"]


def test_sms_scored_against_a_baseline_a_practitioner_would_use(run):
    """TF-IDF + linear SVM is as strong as it is in practice (Platt-scaled: 0.985; 0.962 at the raw
    margin, which would flatter the model), a loss to it is listed, and the model stays near 0.974."""
    texts = metrics(run, "sms", "evaluate")
    tfidf = texts["baselines"]["tfidf"]
    assert tfidf["macro_f1"] >= 0.975, tfidf
    assert ("tfidf" in texts["not_beaten"]) == (tfidf["verdict"] == "worse"), texts["not_beaten"]
    assert texts["macro_f1"] >= 0.96, texts["macro_f1"]


@pytest.mark.xfail(strict=True, reason="issue 6 open: fine-tuned MiniLM 0.974 on SMS, under the 0.98 target and "
                                       "under the Platt-scaled TF-IDF baseline (0.985) on the same split")
def test_sms_fine_tuning_reaches_the_target_and_beats_tfidf(run):
    """Issue 6's SMS target: test macro-F1 >= 0.98 and not below TF-IDF on the same grouped split."""
    texts = metrics(run, "sms", "evaluate")
    assert texts["macro_f1"] >= 0.98 and texts["not_beaten"] == [], texts["baselines"]


def test_sms_on_a_dask_cluster_gives_the_bytes_of_one_process(run):
    """The SMS data stages forced again on a 2-worker LocalCluster, in partitions of 1,000 rows,
    write what the overlay's local run wrote (every data output's hash in dvc.lock)."""
    subprocess.run(["git", "add", "-A"], cwd=run, check=True, capture_output=True, env={**os.environ, **RUN_ENV})
    subprocess.run(["git", "commit", "-qm", "real-data run"], cwd=run, check=True, capture_output=True, env={**os.environ, **RUN_ENV})
    before = lock_outs(run / "dvc.lock")
    engine = {"kind": "dask", "partition_rows": 1000, "dask": {"workers": 2, "memory_limit": "3GB"}}
    assert rerun_data_stages_on(run, engine, ["sms"]) == before
