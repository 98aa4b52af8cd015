"""Evaluate: score the fine-tuned model on the test split, beside its baselines.

Writes accuracy, macro-F1, per-class precision/recall/F1, the confusion matrix, ROC-AUC (binary
tasks) and the expected calibration error to the metrics; every test prediction to a Parquet
file; the confusion matrix and the reliability diagram as plot data for `dvc plots show`. With
the baselines' predictions it sets each baseline's macro-F1 beside the model's and warns about any
baseline the model did not beat (negative transfer, or a model not worth shipping).

The test split is read a chunk at a time into the model's inputs in scratch files beside the
predictions, then predicted batch by batch, as finetune trains.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageError
from pipeline.io import read_records, scratch_folder, write_json, write_table
from pipeline.ledger import Fates
from pipeline.model.device import choose_device, make_deterministic
from pipeline.model.learnable import require_records
from pipeline.model.models import load_classifier
from pipeline.model.scores import (classification_scores, compare_with_baselines, macro_f1_difference_interval,
                                   probability_scores, reliability, softmax)
from pipeline.model.spill import FileStore, split_frames
from pipeline.model.train import predict_logits
from pipeline.seeding import rng
from pipeline.stages.base import Context, Outcome, entry, stage_main

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (test record set)")
    parser.add_argument("--model", required=True, type=Path, help="model folder from finetune")
    parser.add_argument("--predictions", required=True, type=Path, help="Parquet file for test predictions")
    parser.add_argument("--baselines", type=Path, help="the baselines stage's test predictions, to compare with")
    parser.add_argument("--plots", type=Path, help="folder for plot data (confusion matrix, reliability diagram)")


def run(ctx: Context) -> Outcome:
    device = choose_device(ctx.params.finetune.device)
    make_deterministic(0, ctx.params.finetune.threads)
    model = load_classifier(ctx.args.model, device)
    labels, bins = model.labels, ctx.params.evaluate.calibration_bins
    path = ctx.args.data / "test.parquet"
    test = read_records(path, ["id", "label"])
    known = test[test["label"].isin(labels)]
    ctx.ledger.record(Fates.dropped(test.loc[~test["label"].isin(labels), "id"], "label_not_in_model"))
    require_records("evaluate", ctx.name, len(known), len(test), "test", labels)
    with scratch_folder(ctx.args.predictions.parent, "evaluate") as scratch:
        store = FileStore(scratch)
        column = "text" if ctx.dataset.modality == "text" else "image"
        logits = predict_logits(model, model.inputs(split_frames(path, column, labels), store), ctx.params.evaluate.batch_size, device)
        store.close()
    probs = softmax(logits) if len(known) else np.zeros((0, len(labels)))
    y_true = np.array([labels.index(l) for l in known["label"]], dtype=np.int64)
    y_pred = probs.argmax(axis=1)
    write_table(pa.table({
        "id": list(known["id"]), "label": list(known["label"]), "predicted": [labels[i] for i in y_pred],
        "confidence": [round(float(p.max()), 6) for p in probs],
    }), ctx.args.predictions)
    scores = {**classification_scores(y_true, y_pred, labels), **probability_scores(y_true, probs, bins=bins),
              **device.describe()}
    if ctx.args.baselines is not None:
        scores.update(_against_baselines(ctx.args.baselines, known, labels, y_pred, scores, ctx.params.seed))
    if ctx.args.plots is not None:
        write_plots(ctx.args.plots, known["label"], [labels[i] for i in y_pred], reliability(y_true, probs, bins=bins))
    return Outcome(len(test), len(known), scores)


def _against_baselines(path: Path, known: pd.DataFrame, labels: list[str], model_pred: np.ndarray,
                       model_scores: dict[str, Any], seed: int) -> dict[str, Any]:
    """Each baseline scored on the same test records as the model, side by side, with warnings.

    Beside each difference goes its 95% paired bootstrap interval, so a reader can tell a loss
    this split measures from one it cannot distinguish from noise.
    """
    table = pq.read_table(path).to_pandas()
    baselines, intervals = {}, {}
    for name, rows in table.groupby("baseline", sort=True):
        rows = rows.set_index("id")
        missing = set(known["id"]) - set(rows.index)
        if missing:
            raise StageError(f"{path}: baseline {name!r} has no prediction for {len(missing)} test record(s), "
                             f"e.g. {sorted(missing)[0]!r}: rerun the baselines stage")
        predicted = [labels.index(l) for l in rows.loc[known["id"], "predicted"]]
        y_true = [labels.index(l) for l in known["label"]]
        base = classification_scores(y_true, predicted, labels)
        ranking = probability_scores(y_true, np.stack(rows.loc[known["id"], "scores"].to_list()), bins=1, calibrated=False)
        baselines[name] = {"accuracy": base["accuracy"], "macro_f1": base["macro_f1"], **ranking}
        intervals[name] = macro_f1_difference_interval(y_true, model_pred, predicted, len(labels),
                                                       generator=rng(seed, "evaluate", name))
    comparison = compare_with_baselines(model_scores, baselines)
    for name, interval in intervals.items():
        comparison["baselines"][name]["difference_interval_95"] = interval
    warnings = [f"the fine-tuned model (macro-F1 {model_scores['macro_f1']}) did not beat the {name} baseline "
                f"(macro-F1 {comparison['baselines'][name]['macro_f1']}) on the same test split "
                f"(95% paired bootstrap interval of the difference: {intervals[name]})"
                for name in comparison["not_beaten"]]
    for warning in warnings:
        log.warning("%s", warning)
    return {**comparison, "warnings": warnings}


def write_plots(folder: Path, actual: pd.Series, predicted: list[str], bins: list[dict[str, float]]) -> None:
    """Plot data: one (actual, predicted) row per test record, and the reliability diagram's bins."""
    write_json([{"actual": a, "predicted": p} for a, p in zip(actual, predicted)], folder / "confusion.json")
    write_json(bins, folder / "reliability.json")


def main(argv: list[str] | None = None) -> int:
    return stage_main("evaluate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
