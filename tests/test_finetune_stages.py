"""The model stages through main([...]) on tiny final splits: features, finetune, baselines, evaluate.

The text chain runs in the quick suite (a few dozen short texts on the packaged MiniLM); the image
chain and the other strategies are slow-marked.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import text_records, write_params
from pipeline.io import read_records, write_json, write_records
from pipeline.records import conform, make_id
from pipeline.stages import baselines, evaluate, features, finetune

SPAM = ["WIN a FREE prize now call {}", "FREE cash prize txt WIN to {}", "URGENT you won {} pounds call now",
        "claim your FREE reward {} reply WIN"]
HAM = ["see you at lunch at {}", "can you pick up milk, back by {}", "running late, there in {} minutes",
       "thanks for dinner, see you {}"]
TEXT = {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}
IMAGE = {"im": {"modality": "image", "source": "images", "format": "image_folder"}}
QUICK = {"text": {"epochs": 2, "batch_size": 8, "max_length": 24},
         "image": {"epochs": 2, "batch_size": 8, "image_size": 32}}
BASELINES = {"baselines": {"random_init": {"epochs": 1, "batch_size": 16, "image_size": 32}}}


def text_final(root: Path, n: int = 16) -> Path:
    """Final train/val/test record sets of spam and ham texts (n per class in train), and a card."""
    def rows(start: int, count: int) -> list[tuple[str, str]]:
        return [(label, templates[i % 4].format(start + i)) for i in range(count)
                for label, templates in (("spam", SPAM), ("ham", HAM))]
    splits = {"train": rows(0, n), "val": rows(100, 4) + [("other", "a label train never saw")], "test": rows(200, 5)}
    return _write_final(root, {name: text_records(r) for name, r in splits.items()})


def _png(seed: int, shape: str) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((32, 32, 3), 230, dtype=np.uint8)
    x, y = rng.integers(2, 12, 2)
    if shape == "square":
        pixels[y : y + 16, x : x + 16] = (200, 30, 30)
    else:
        yy, xx = np.mgrid[:32, :32]
        pixels[(yy - y - 9) ** 2 + (xx - x - 9) ** 2 < 64] = (30, 30, 200)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def image_final(root: Path) -> Path:
    def frame(start: int, count: int) -> pd.DataFrame:
        items = [(shape, start + i) for i in range(count) for shape in ("circle", "square")]
        ids = [make_id("img", shape, seed) for shape, seed in items]
        return conform(pd.DataFrame({
            "id": ids, "label": [s for s, _ in items], "image": [_png(seed, s) for s, seed in items],
            "width": 32, "height": 32, "content_hash": ids, "source": "mem", "group_id": ids}))
    return _write_final(root, {"train": frame(0, 12), "val": frame(100, 3), "test": frame(200, 4)})


def _write_final(root: Path, splits: dict[str, pd.DataFrame]) -> Path:
    final = root / "final"
    for name, frame in splits.items():
        write_records(frame, final / f"{name}.parquet")
    write_json({"version": "v-test"}, final / "card.json")
    return final


def run_chain(root: Path, datasets: dict, final: Path, *, out: str = "out", **finetune_params) -> Path:
    """features, finetune, baselines, evaluate on `final`; outputs under root/out."""
    name = next(iter(datasets))
    params = write_params(root / f"{out}.yaml", datasets, finetune={**QUICK, **finetune_params}, evaluate=BASELINES)
    o = root / out

    def common(stage: str) -> list[str]:
        return ["--dataset", name, "--params", str(params), "--metrics", str(o / "metrics" / f"{stage}.json"),
                "--ledger", str(o / "ledger" / f"{stage}.parquet"), "--data", str(final)]

    assert features.main([*common("features"), "--output", str(o / "features")]) == 0
    assert finetune.main([*common("finetune"), "--features", str(o / "features"), "--output", str(o / "model"),
                          "--live", str(o / "plots" / "training")]) == 0
    assert baselines.main([*common("baselines"), "--features", str(o / "features"),
                           "--output", str(o / "eval" / "baselines.parquet")]) == 0
    assert evaluate.main([*common("evaluate"), "--model", str(o / "model"), "--baselines", str(o / "eval" / "baselines.parquet"),
                          "--predictions", str(o / "eval" / "predictions.parquet"), "--plots", str(o / "plots" / "evaluate")]) == 0
    return o


def metrics(out: Path, stage: str) -> dict:
    return json.loads((out / "metrics" / f"{stage}.json").read_text())


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("text")
    final = text_final(root)
    return root, run_chain(root, TEXT, final)


def test_every_stage_balances_its_books(text_run):
    _, out = text_run
    for stage in ("features", "finetune", "baselines", "evaluate"):
        m = metrics(out, stage)
        assert m["in"] + m["generated"] == m["out"] + m["merged"] + sum(m["dropped"].values()), stage
    assert metrics(out, "finetune")["dropped"] == {"label_not_in_train": 1}  # the val record of an unknown class
    ledger = pq.read_table(out / "ledger" / "finetune.parquet").to_pandas()
    assert len(ledger) == 1


def test_features_are_cached_per_split(text_run):
    _, out = text_run
    table = pq.read_table(out / "features" / "train.parquet")
    assert table.num_rows == 32 and table.schema.field("features").type.list_size == 384
    assert table.column("id").to_pylist() == sorted(table.column("id").to_pylist())
    assert metrics(out, "features")["device"] == "cpu"


def test_features_read_a_split_in_chunks_and_write_one_row_group_each(text_run, monkeypatch):
    """With 5-record chunks the train file holds the same records in id order, in 7 row groups, and
    vectors equal to the one-chunk run's up to float rounding (the model batches inside a chunk)."""

    root, out = text_run
    monkeypatch.setattr(features, "CHUNK_ROWS", 5)
    again = root / "chunked"
    params = root / "out.yaml"
    assert features.main(["--dataset", next(iter(TEXT)), "--params", str(params), "--metrics", str(again / "m.json"),
                          "--data", str(root / "final"), "--output", str(again)]) == 0
    whole, chunked = (pq.read_table(folder / "train.parquet") for folder in (out / "features", again))
    assert pq.ParquetFile(again / "train.parquet").num_row_groups == 7 and pq.ParquetFile(out / "features" / "train.parquet").num_row_groups == 1
    assert chunked.column("id").to_pylist() == whole.column("id").to_pylist() == sorted(whole.column("id").to_pylist())
    assert chunked.column("label").to_pylist() == whole.column("label").to_pylist()
    vectors = [np.stack(t.column("features").to_numpy(zero_copy_only=False)) for t in (whole, chunked)]
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)


def test_finetune_records_history_device_and_a_model_card(text_run):
    root, out = text_run
    m = metrics(out, "finetune")
    assert [row["epoch"] for row in m["history"]] == [1, 2] and 1 <= m["best_epoch"] <= 2
    assert {"train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "trainable_groups"} <= set(m["history"][0])
    assert (m["device"], m["amp"], m["strategy"]) == ("cpu", None, "partial")
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["dataset_version"] == "v-test" and card["labels"] == ["ham", "spam"]
    assert card["params"]["text"]["freeze_layers"] == 4 and card["training"]["device"] == "cpu"
    assert set(card["software"]) >= {"python", "torch", "transformers", "scikit-learn"}
    assert card["metrics"]["validation"]["macro_f1"] == m["val_macro_f1"]
    assert (out / "model" / "model.safetensors").stat().st_size > 1_000_000


def test_training_curves_logged_with_dvclive(text_run):
    _, out = text_run
    loss = (out / "plots" / "training" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert loss[0] == "step\tloss" and [row.split("\t")[0] for row in loss[1:]] == ["1", "2"]
    assert not (out / "plots" / "training" / "metrics.json").exists()  # the summary lives in the stage metrics


def test_evaluate_scores_calibration_and_binary_roc_auc(text_run):
    _, out = text_run
    m = metrics(out, "evaluate")
    assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "roc_auc", "ece"} <= set(m)
    assert m["accuracy"] >= 0.8 and 0.0 <= m["ece"] <= 1.0
    confusion = json.loads((out / "plots" / "evaluate" / "confusion.json").read_text())
    assert len(confusion) == 10 and set(confusion[0]) == {"actual", "predicted"}
    bins = json.loads((out / "plots" / "evaluate" / "reliability.json").read_text())
    assert sum(row["count"] for row in bins) == 10


def test_evaluate_sets_the_baselines_beside_the_model(text_run):
    _, out = text_run
    m = metrics(out, "evaluate")
    assert set(m["baselines"]) == {"linear_probe", "random_init", "tfidf"}
    for name, row in m["baselines"].items():
        assert {"macro_f1", "accuracy", "roc_auc", "verdict", "beaten"} <= set(row)
        assert (name in m["not_beaten"]) == (row["verdict"] == "worse")
        low, high = row["difference_interval_95"]
        assert low <= row["model_minus_baseline_macro_f1"] <= high  # the measured difference lies inside its interval
    assert len(m["warnings"]) == len(m["not_beaten"])
    predictions = pq.read_table(out / "eval" / "baselines.parquet").to_pandas()
    assert sorted(predictions["baseline"].unique()) == ["linear_probe", "random_init", "tfidf"]
    assert len(predictions) == 3 * 10


def test_finetune_is_bit_reproducible(text_run):
    root, out = text_run
    again = root / "again"
    assert finetune.main(["--dataset", "t", "--params", str(root / "out.yaml"), "--data", str(root / "final"),
                          "--features", str(out / "features"), "--output", str(again / "model"),
                          "--metrics", str(again / "finetune.json")]) == 0
    for name in ("model.safetensors", "card.json", "classifier.json"):
        assert _sha(out / "model" / name) == _sha(again / "model" / name), name
    first, second = metrics(out, "finetune"), json.loads((again / "finetune.json").read_text())
    assert first["history"] == second["history"]


def test_linear_probe_needs_the_cached_features(text_run, caplog):
    root, out = text_run
    params = write_params(root / "probe.yaml", TEXT, finetune={"text": {"strategy": "linear_probe", "epochs": 3, "lr": 0.01}})
    args = ["--dataset", "t", "--params", str(params), "--data", str(root / "final"), "--output", str(root / "probe"),
            "--metrics", str(root / "probe.json")]
    assert finetune.main(args) == 1
    assert "pass --features" in caplog.text
    assert finetune.main([*args, "--features", str(out / "features")]) == 0
    m = json.loads((root / "probe.json").read_text())
    assert m["strategy"] == "linear_probe" and all(row["trainable_groups"] == 1 for row in m["history"])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["gradual", "full"])
def test_other_text_strategies_train(tmp_path, strategy):
    final = text_final(tmp_path, n=8)
    out = run_chain(tmp_path, TEXT, final, text={**QUICK["text"], "strategy": strategy, "freeze_layers": 4, "lr_decay": 0.8})
    history = metrics(out, "finetune")["history"]
    expected = [1, 2] if strategy == "gradual" else [8, 8]  # gradual: head, then head + layer 5; full: all 8 groups
    assert [row["trainable_groups"] for row in history] == expected


@pytest.mark.slow  # exports and runs the graph
def test_onnx_export_is_checked_on_the_first_val_records(tmp_path):
    final = text_final(tmp_path, n=8)
    out = run_chain(tmp_path, TEXT, final, onnx=True)
    report = metrics(out, "finetune")["onnx"]
    train, val = (read_records(final / f"{s}.parquet") for s in ("train", "val"))
    known = val["label"].isin(set(train["label"])).sum()  # val records of a label train lacks are not scored
    assert report["checked_records"] == min(16, known) and report["max_abs_difference"] < 1e-3
    assert (out / "model" / "model.onnx").stat().st_size > 0
    assert json.loads((out / "model" / "card.json").read_text())["files"]["onnx"] == "model.onnx"


@pytest.mark.slow
def test_image_chain(tmp_path):
    out = run_chain(tmp_path, IMAGE, image_final(tmp_path))
    assert metrics(out, "features")["dimensions"] == 1280
    m = metrics(out, "evaluate")
    assert m["accuracy"] >= 0.75 and "roc_auc" in m
    assert set(m["baselines"]) == {"linear_probe", "random_init"}  # no TF-IDF for images
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["base_model"].startswith("efficientnet-lite0") and card["params"]["image"]["freeze_blocks"] == 14


def test_linear_probe_with_smote_trains_on_synthetic_minority_features(tmp_path):
    """smote_ratio: the head sees SMOTE points up to the ratio; the records and the ledger do not change."""
    final = text_final(tmp_path, n=16)
    records = read_records(final / "train.parquet")
    kept = pd.concat([records[records["label"] == "spam"], records[records["label"] == "ham"].head(4)])
    write_records(kept, final / "train.parquet")
    out = run_chain(tmp_path, TEXT, final, text={**QUICK["text"], "strategy": "linear_probe", "lr": 0.01, "smote_ratio": 1.0,
                                                  "smote_neighbors": 3})
    m = metrics(out, "finetune")
    assert m["smote_generated"] == 12 and m["in"] == len(kept) + 9  # 16 spam vs 4 ham: 12 synthetic ham vectors


def test_smote_is_refused_outside_the_linear_probe(tmp_path, caplog):
    params = write_params(tmp_path / "p.yaml", TEXT, finetune={"text": {"strategy": "partial", "smote_ratio": 1.0}})
    args = ["--dataset", "t", "--params", str(params), "--data", str(tmp_path), "--output", str(tmp_path / "m"),
            "--metrics", str(tmp_path / "m.json")]
    assert finetune.main(args) == 2
    assert "smote_ratio applies to strategy linear_probe" in caplog.text


@pytest.mark.parametrize("stage", ["finetune", "baselines"])
def test_a_train_split_of_one_class_stops_with_its_counts_not_a_library_traceback(tmp_path, caplog, stage):
    """A small corpus whose train split ended up with one class (a new user met scikit-learn's
    "needs samples of at least 2 classes" in the linear probe)."""
    final = text_final(tmp_path, n=4)
    train = read_records(final / "train.parquet")
    write_records(train[train["label"] == "spam"], final / "train.parquet")
    params = write_params(tmp_path / "p.yaml", TEXT, finetune=QUICK, evaluate=BASELINES)
    args = ["--dataset", "t", "--params", str(params), "--data", str(final), "--features", str(tmp_path / "features"),
            "--metrics", str(tmp_path / "m.json")]
    main = {"finetune": finetune.main, "baselines": baselines.main}[stage]
    output = ["--output", str(tmp_path / ("model" if stage == "finetune" else "baselines.parquet"))]
    assert main([*args, *output]) == 1
    assert f"{stage}@t failed: {stage}@t: the train split holds one class ('spam': 4 records)" in caplog.text
    assert "Traceback" not in caplog.text and not (tmp_path / "m.json").exists()


def test_a_test_split_with_no_known_label_stops_evaluate(tmp_path, caplog):
    final = text_final(tmp_path, n=4)
    params = write_params(tmp_path / "p.yaml", TEXT, finetune={"text": {**QUICK["text"], "epochs": 1}})
    assert finetune.main(["--dataset", "t", "--params", str(params), "--data", str(final), "--output", str(tmp_path / "model"),
                          "--metrics", str(tmp_path / "f.json")]) == 0
    test = read_records(final / "test.parquet")
    write_records(test.assign(label="other"), final / "test.parquet")
    code = evaluate.main(["--dataset", "t", "--params", str(params), "--data", str(final), "--model", str(tmp_path / "model"),
                          "--predictions", str(tmp_path / "p.parquet"), "--metrics", str(tmp_path / "m.json")])
    assert code == 1
    assert f"the test split holds {len(test)} record(s), none with a label train has (ham, spam)" in caplog.text


def test_an_empty_val_split_trains_the_last_epoch_and_an_empty_test_split_stops_scoring(tmp_path, caplog):
    """An empty split is a clear outcome, not a traceback from the tokenizer or torch: features of
    no record are none, finetune keeps its last epoch and says that nothing validated it, and the
    baselines stop because there is nothing to score."""
    final = text_final(tmp_path, n=4)
    for name in ("val", "test"):
        write_records(read_records(final / f"{name}.parquet").iloc[0:0], final / f"{name}.parquet")
    params = write_params(tmp_path / "p.yaml", TEXT, finetune={"text": {**QUICK["text"], "epochs": 2}}, evaluate=BASELINES)
    common = ["--dataset", "t", "--params", str(params), "--data", str(final)]
    assert features.main([*common, "--output", str(tmp_path / "features"), "--metrics", str(tmp_path / "fe.json")]) == 0
    assert pq.read_table(tmp_path / "features" / "val.parquet").num_rows == 0
    assert finetune.main([*common, "--output", str(tmp_path / "model"), "--metrics", str(tmp_path / "fi.json")]) == 0
    assert json.loads((tmp_path / "fi.json").read_text())["best_epoch"] == 2
    assert "the val split holds no record of a class train has (0 record(s) in all)" in caplog.text
    code = baselines.main([*common, "--features", str(tmp_path / "features"), "--output", str(tmp_path / "b.parquet"),
                           "--metrics", str(tmp_path / "b.json")])
    assert code == 1 and "baselines@t: the test split is empty; there is nothing to score" in caplog.text
    assert "Traceback" not in caplog.text
