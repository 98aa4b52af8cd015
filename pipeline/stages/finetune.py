"""Finetune: train a pretrained model on the final train split, selecting the epoch on val.

Text uses all-MiniLM-L6-v2 with a classification head, images EfficientNet-Lite0 with ImageNet
weights and a new head; both load offline. Weights go to safetensors beside a model card that
names the dataset version they were trained on.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from pipeline.io import read_records, write_json
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.models import ImageClassifier, TextClassifier, default_image_weights, default_text_model
from pipeline.steps.train import fit, make_deterministic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val record sets and card)")
    parser.add_argument("--output", required=True, type=Path, help="model folder to write")


def build(ctx: Context, labels: list[str]) -> TextClassifier | ImageClassifier:
    """The configured pretrained classifier for this dataset's modality."""
    params = ctx.params.finetune
    if ctx.dataset.modality == "text":
        folder = Path(params.text.model) if params.text.model else default_text_model()
        return TextClassifier.pretrained(folder, labels, params.text.max_length, params.text.train_layers)
    weights = Path(params.image.weights) if params.image.weights else default_image_weights()
    return ImageClassifier.pretrained(weights, labels, train_blocks=params.image.train_blocks, image_size=params.image.image_size)


def run(ctx: Context) -> Outcome:
    params = ctx.params.finetune
    hyper = params.text if ctx.dataset.modality == "text" else params.image
    seed = derive_seed(ctx.params.seed, "finetune", bits=32)
    make_deterministic(seed, params.threads)
    train, val = (read_records(ctx.args.data / f"{s}.parquet") for s in ("train", "val"))
    card = json.loads((ctx.args.data / "card.json").read_text())
    labels = sorted(set(train["label"]))
    index = {label: i for i, label in enumerate(labels)}
    model = build(ctx, labels)
    known_val = val[val["label"].isin(index)]
    ctx.ledger.drop(val.loc[~val["label"].isin(index), "id"], "label_not_in_train")
    data = [(model.inputs(f), torch.tensor([index[l] for l in f["label"]], dtype=torch.long)) for f in (train, known_val)]
    result = fit(model, data[0], data[1], n_classes=len(labels), epochs=hyper.epochs, batch_size=hyper.batch_size,
                 lr=hyper.lr, weight_decay=hyper.weight_decay, seed=seed)
    model.save(ctx.args.output, labels)
    best = result.history[result.best_epoch - 1]
    write_json(_model_card(ctx, card, labels, result, best), ctx.args.output / "card.json")
    extra = {"history": result.history, "best_epoch": result.best_epoch, "val_macro_f1": best["val_macro_f1"],
             "labels": labels, "device": "cpu", "threads": params.threads}
    return Outcome(len(train) + len(val), len(train) + len(known_val), extra)


def _model_card(ctx: Context, card: dict, labels: list[str], result, best: dict) -> dict:
    import transformers

    modality = ctx.dataset.modality
    return {
        "dataset": ctx.name,
        "dataset_version": card["version"],
        "modality": modality,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2" if modality == "text" else "efficientnet-lite0 (ImageNet)",
        "labels": labels,
        "params": {"seed": ctx.params.seed, "threads": ctx.params.finetune.threads,
                   **getattr(ctx.params.finetune, modality).model_dump(mode="json")},
        "best_epoch": result.best_epoch,
        "val": best,
        "software": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    return stage_main("finetune", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
