"""Baselines: what fine-tuning must beat on the same split (the negative-transfer check).

Each is trained on the final train split and scored on test, the split evaluate scores the model on:
- `linear_probe`: logistic regression on the cached frozen features (features stage);
- `random_init`: the same architecture from random initialisation, all of it trained with its
  own short recipe (`evaluate.baselines.random_init`; val picks the epoch);
- `tfidf` (texts): TF-IDF character 2-5-grams with a linear SVM, Platt-scaled on out-of-fold margins;
- `metadata_probe` (datasets with metadata columns): logistic regression on the prepared metadata
  features of the final splits (`final/metadata`) alone: a label the metadata predicts well is a
  shortcut a model can learn instead of the content.
Writes every baseline's test predictions with per-class scores; evaluate sets them beside the model.

`random_init` reads the splits a chunk at a time and trains from inputs in scratch files, as
finetune does; the scikit-learn baselines fit on the whole train split in memory (the features
matrix, or the texts), which bounds the size they can run at: switch them off for larger corpora.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.errors import StageError
from pipeline.io import read_features, read_records, scratch_folder, write_table
from pipeline.ledger import Fates
from pipeline.model import baselines
from pipeline.model.device import choose_device, make_deterministic
from pipeline.model.learnable import require_classes, require_records
from pipeline.model.models import classifier_for
from pipeline.model.scores import classification_scores, probability_scores, softmax
from pipeline.model.spill import FileStore, split_frames
from pipeline.model.train import Recipe, fit, predict_logits
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val/test record sets)")
    parser.add_argument("--features", required=True, type=Path, help="frozen features from the features stage")
    parser.add_argument("--output", required=True, type=Path, help="Parquet file for the baselines' test predictions")


def run(ctx: Context) -> Outcome:
    train, val, test = (read_records(ctx.args.data / f"{s}.parquet", ["id", "label"]) for s in SPLITS)
    require_classes("baselines", ctx.name, train["label"])
    labels = sorted(set(train["label"]))
    known = {"train": train, "val": val[val["label"].isin(labels)], "test": test[test["label"].isin(labels)]}
    ctx.ledger.record(Fates.dropped(test.loc[~test["label"].isin(labels), "id"], "label_not_in_train"))
    require_records("baselines", ctx.name, len(known["test"]), len(test), "test", labels)
    y = {name: np.array([labels.index(l) for l in f["label"]], dtype=np.int64) for name, f in known.items()}
    scores, seconds = {}, {}
    for name, make in _enabled(ctx).items():
        started = time.perf_counter()
        scores[name] = make(ctx, known, y, labels)
        seconds[name] = round(time.perf_counter() - started, 3)
    write_table(predictions_table(known["test"], scores, labels), ctx.args.output)
    extra = {name: _scores(y["test"], s, labels, bins=ctx.params.evaluate.calibration_bins) for name, s in scores.items()}
    return Outcome(len(test), len(known["test"]), {"baselines": extra, "labels": labels}, {"baselines": seconds})


def _enabled(ctx: Context) -> dict:
    params = ctx.params.evaluate.baselines
    wanted = {"linear_probe": params.linear_probe, "random_init": params.random_init.enabled,
              "tfidf": params.tfidf and ctx.dataset.modality == "text",
              "metadata_probe": params.metadata_probe and bool(ctx.dataset.metadata)}
    makers = {"linear_probe": _linear_probe, "random_init": _random_init, "tfidf": _tfidf, "metadata_probe": _metadata_probe}
    return {name: makers[name] for name in sorted(wanted) if wanted[name]}


def _linear_probe(ctx: Context, frames, y, labels) -> np.ndarray:
    x = {name: read_features(ctx.args.features / f"{name}.parquet", frames[name]["id"]) for name in ("train", "test")}
    section = getattr(ctx.params.finetune, ctx.dataset.modality)
    return baselines.linear_probe(x["train"], y["train"], x["test"], n_classes=len(labels),
                                  class_weights=section.class_weights, seed=ctx.params.seed)


def _metadata_probe(ctx: Context, frames, y, labels) -> np.ndarray:
    x = {name: metadata_features(ctx.args.data / "metadata" / f"{name}.parquet", frames[name]["id"]) for name in ("train", "test")}
    section = getattr(ctx.params.finetune, ctx.dataset.modality)
    return baselines.metadata_probe(x["train"], y["train"], x["test"], n_classes=len(labels),
                                    class_weights=section.class_weights, seed=ctx.params.seed)


def metadata_features(path: Path, ids: pd.Series) -> np.ndarray:
    """The metadata feature rows of `ids` (float64, in their order); fails naming the first id
    without a row, and when the table has no feature column (the dataset's metadata is all dropped)."""
    table = pq.read_table(path).to_pandas().set_index("id")
    missing = ids[~ids.isin(table.index)]
    if len(missing):
        raise StageError(f"{path} has no metadata row for record {missing.iloc[0]!r} ({len(missing)} missing): "
                         "rerun the rebalance stage")
    if table.shape[1] == 0:
        raise StageError(f"{path} has no metadata feature (feature selection kept none): "
                         "set evaluate.baselines.metadata_probe: false")
    return table.loc[ids].to_numpy(np.float64)


def _tfidf(ctx: Context, frames, y, labels) -> np.ndarray:
    section = getattr(ctx.params.finetune, ctx.dataset.modality)
    texts = {name: _texts(ctx.args.data / f"{name}.parquet", labels) for name in ("train", "test")}
    return baselines.tfidf_svm(texts["train"], y["train"], texts["test"], n_classes=len(labels),
                               class_weights=section.class_weights, seed=ctx.params.seed)


def _texts(path: Path, labels: list[str]) -> pd.Series:
    """The texts of the records of `path` whose label is in `labels`, in id order."""
    chunks = [chunk["text"] for chunk in split_frames(path, "text", labels)]
    return pd.concat(chunks, ignore_index=True) if chunks else pd.Series([], dtype=object)


def _random_init(ctx: Context, frames, y, labels) -> np.ndarray:
    """The fine-tuned architecture, untrained, trained in full: probabilities on test."""
    with scratch_folder(ctx.args.output.parent, "baselines") as scratch:
        store = FileStore(scratch)
        try:
            return _train_random_init(ctx, y, labels, store)
        finally:
            store.close()


def _train_random_init(ctx: Context, y, labels, store: FileStore) -> np.ndarray:
    params, section = ctx.params, getattr(ctx.params.finetune, ctx.dataset.modality)
    options = params.evaluate.baselines.random_init
    device = choose_device(params.finetune.device)
    seed = derive_seed(params.seed, "baseline", "random_init", bits=32)
    make_deterministic(seed, params.finetune.threads)
    model = classifier_for(section.model_copy(update={"dropout": options.dropout}), labels, device=device,
                           random_init=True, image_size=options.image_size)
    column = "text" if ctx.dataset.modality == "text" else "image"
    inputs = {name: model.inputs(split_frames(ctx.args.data / f"{name}.parquet", column, labels), store) for name in SPLITS}
    data = {name: (inputs[name], torch.from_numpy(y[name])) for name in ("train", "val")}
    recipe = Recipe(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr, schedule="cosine", warmup=0.1,
                    weight_decay=0.01, clip_norm=1.0, class_weights=section.class_weights)
    fit(model, data["train"], data["val"], n_classes=len(labels), recipe=recipe, seed=seed, device=device)
    logits = predict_logits(model, inputs["test"], params.evaluate.batch_size, device)
    return softmax(logits) if len(logits) else np.zeros((0, len(labels)))


def predictions_table(test: pd.DataFrame, scores: dict[str, np.ndarray], labels: list[str]) -> pa.Table:
    """One row per (baseline, test record): the true label, the predicted one and the per-class scores."""
    parts = []
    for name in sorted(scores):
        s = scores[name]
        parts.append(pd.DataFrame({
            "baseline": name, "id": test["id"].to_numpy(), "label": test["label"].to_numpy(),
            "predicted": [labels[i] for i in s.argmax(axis=1)] if len(s) else [],
            "scores": [np.round(row, 6).tolist() for row in s],
        }))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["baseline", "id", "label", "predicted", "scores"])
    frame = frame.sort_values(["baseline", "id"], kind="stable")
    schema = pa.schema([("baseline", pa.string()), ("id", pa.string()), ("label", pa.string()),
                        ("predicted", pa.string()), ("scores", pa.list_(pa.float64()))])
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def _scores(y_true: np.ndarray, scores: np.ndarray, labels: list[str], *, bins: int) -> dict:
    if not len(y_true):
        return {"accuracy": 0.0, "macro_f1": 0.0}
    base = classification_scores(y_true, scores.argmax(axis=1), labels)
    return {"accuracy": base["accuracy"], "macro_f1": base["macro_f1"],
            **probability_scores(y_true, scores, bins=bins)}


def main(argv: list[str] | None = None) -> int:
    return stage_main("baselines", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
