"""Evaluate: score the fine-tuned model on the test split.

Writes accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix to the metrics,
and every test prediction to a Parquet file for inspection.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pyarrow as pa
import torch

from pipeline.io import read_records, write_table
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.models import ImageClassifier, TextClassifier
from pipeline.steps.scores import classification_scores
from pipeline.steps.train import make_deterministic, predict_logits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (test record set)")
    parser.add_argument("--model", required=True, type=Path, help="model folder from finetune")
    parser.add_argument("--predictions", required=True, type=Path, help="Parquet file for test predictions")


def run(ctx: Context) -> Outcome:
    make_deterministic(0, ctx.params.finetune.threads)
    config = json.loads((ctx.args.model / "classifier.json").read_text())
    labels = config["labels"]
    model = TextClassifier.load(ctx.args.model) if config["kind"] == "text" else ImageClassifier.load(ctx.args.model)
    test = read_records(ctx.args.data / "test.parquet")
    known = test[test["label"].isin(labels)]
    ctx.ledger.drop(test.loc[~test["label"].isin(labels), "id"], "label_not_in_model")
    logits = predict_logits(model, model.inputs(known), ctx.params.evaluate.batch_size)
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy() if len(known) else logits
    index = {label: i for i, label in enumerate(labels)}
    y_true, y_pred = [index[l] for l in known["label"]], probs.argmax(axis=1).tolist() if len(known) else []
    write_table(pa.table({
        "id": list(known["id"]), "label": list(known["label"]), "predicted": [labels[i] for i in y_pred],
        "confidence": [round(float(p.max()), 6) for p in probs],
    }), ctx.args.predictions)
    scores = classification_scores(y_true, y_pred, labels)
    return Outcome(len(test), len(known), scores)


def main(argv: list[str] | None = None) -> int:
    return stage_main("evaluate", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
