"""Finetune: train a pretrained model on the final train split, selecting the epoch on val.

Text uses all-MiniLM-L6-v2 (mean pooling and a new head), images EfficientNet-Lite0 with ImageNet
weights and a new head; both load offline. The strategy (linear probe on the cached features,
partial, full, or gradual unfreezing) and the recipe come from `finetune.<modality>`. Per-epoch
curves go to dvclive; the weights go to safetensors beside a model card that names the dataset
version, the params, the validation scores, the device and the software versions.

The splits are read a chunk at a time. Their inputs (token ids, the frozen prefix's output,
decoded pixels, or the cached features) are made once into files of a scratch folder beside the
output and read back batch by batch, so the stage holds its ids and labels, the model and one
batch, not the split. SMOTE (linear probe) needs the train features together, in memory.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.errors import StageError
from pipeline.io import json_bytes, read_records, scratch_folder, write_folder
from pipeline.ledger import Fates
from pipeline.model.device import Device, choose_device, cpu_kernels, make_deterministic
from pipeline.model.learnable import require_classes
from pipeline.model.models import classifier_for
from pipeline.model.onnx_export import FILE as ONNX_FILE
from pipeline.model.onnx_export import export_and_check
from pipeline.model.smote import smote_features
from pipeline.model.spill import FileStore, Store, feature_rows, first_records, split_frames, stacked
from pipeline.model.train import FitResult, fit, recipe_for
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main

log = logging.getLogger(__name__)
CURVES = {"train_loss": "train/loss", "val_loss": "val/loss", "val_accuracy": "val/accuracy",
          "val_macro_f1": "val/macro_f1", "lr": "lr"}
BASE_MODELS = {"text": "sentence-transformers/all-MiniLM-L6-v2", "image": "ImageNet"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="final dataset folder (train/val record sets and card)")
    parser.add_argument("--output", required=True, type=Path, help="model folder to write")
    parser.add_argument("--features", type=Path, help="frozen features from the features stage (strategy linear_probe)")
    parser.add_argument("--live", type=Path, help="dvclive folder for the per-epoch curves")


def run(ctx: Context) -> Outcome:
    params, section = ctx.params.finetune, getattr(ctx.params.finetune, ctx.dataset.modality)
    device = choose_device(params.device)
    seed = derive_seed(ctx.params.seed, "finetune", bits=32)
    make_deterministic(seed, params.threads)
    paths = {s: ctx.args.data / f"{s}.parquet" for s in ("train", "val")}
    train, val = (read_records(paths[s], ["id", "label"]) for s in ("train", "val"))
    require_classes("finetune", ctx.name, train["label"])
    labels = sorted(set(train["label"]))
    known_val = val[val["label"].isin(labels)]
    ctx.ledger.record(Fates.dropped(val.loc[~val["label"].isin(labels), "id"], "label_not_in_train"))
    if known_val.empty:
        log.warning("finetune@%s: the val split holds no record of a class train has (%d record(s) in all): nothing "
                    "validates the epochs, the last is kept and its val metrics read 0", ctx.name, len(val))
    model = classifier_for(section, labels, device=device)
    with scratch_folder(ctx.args.output.parent, "finetune") as scratch:
        store = FileStore(scratch)
        trainer, data = _training_data(ctx, model, section, paths, {"train": train, "val": known_val}, labels, store)
        with _live(ctx.args.live) as on_epoch:
            result = fit(trainer, data["train"], data["val"], n_classes=len(labels), recipe=recipe_for(section), seed=seed,
                         device=device, on_epoch=on_epoch)
        store.close()
    files = model.files()
    extra = {"history": result.history, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
             "smote_generated": int(len(data["train"][1]) - len(train)),
             **{k: result.best[k] for k in ("val_loss", "val_accuracy", "val_macro_f1")},
             "labels": labels, "strategy": section.strategy, **device.describe(), "threads": params.threads}
    if params.onnx:
        column = _content_column(ctx)
        example = first_records(paths["val"], column, labels, 16) if len(known_val) else first_records(paths["train"], column, None, 16)
        exported = export_and_check(model, example)
        files[ONNX_FILE], extra["onnx"] = exported.data, exported.report
    card = json.loads((ctx.args.data / "card.json").read_text(encoding="utf-8"))
    files["card.json"] = json_bytes(model_card(ctx, card, labels, result, device, extra.get("onnx")))
    write_folder(files, ctx.args.output)
    return Outcome(len(train) + len(val), len(train) + len(known_val), extra)


def _content_column(ctx: Context) -> str:
    return "text" if ctx.dataset.modality == "text" else "image"


def _training_data(ctx: Context, model, section, paths: dict[str, Path], frames: dict[str, pd.DataFrame],
                   labels: list[str], store: Store):
    """What `fit` trains and its (inputs, labels) per split: the head on cached features, or the model.

    `frames` hold the ids and labels of the records trained and validated on, in id order."""
    index = {label: i for i, label in enumerate(labels)}
    targets = {name: torch.tensor([index[l] for l in f["label"]], dtype=torch.long) for name, f in frames.items()}
    if section.strategy != "linear_probe":
        column = _content_column(ctx)
        return model, {name: (model.inputs(split_frames(paths[name], column, labels), store), targets[name]) for name in frames}
    if ctx.args.features is None:
        raise StageError("strategy linear_probe trains on cached features: pass --features (the features stage's output)")
    cached = {name: feature_rows(ctx.args.features / f"{name}.parquet", f["id"], store) for name, f in frames.items()}
    if section.smote_ratio is not None:
        train = stacked(cached["train"], slice(None)) if len(cached["train"]) else torch.zeros((0, 0))
        cached["train"], targets["train"] = _smote(train, targets["train"], section, ctx.params.seed)
    return model.probe(), {name: (cached[name], targets[name]) for name in frames}


def _smote(features: torch.Tensor, targets: torch.Tensor, section, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train features with SMOTE's synthetic minority points appended (logged; they are not records)."""
    x, y = smote_features(features.numpy(), targets.numpy(), ratio=section.smote_ratio, neighbors=section.smote_neighbors, seed=seed)
    log.info("smote: %d synthetic feature vectors added to %d", len(x) - len(features), len(features))
    return torch.from_numpy(x), torch.from_numpy(y)


@contextlib.contextmanager
def _live(folder: Path | None) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A callback logging each epoch's history row with dvclive (None without a folder).

    Only the per-metric TSV files are written (no summary, report or dvc.yaml): the summary is in
    the stage metrics, and the plots are declared in dvc.yaml.
    """
    if folder is None:
        yield None
        return
    from dvclive import Live

    live = Live(dir=str(folder), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(row: dict[str, Any]) -> None:
        live.step = row["epoch"]
        for key, name in CURVES.items():
            live.log_metric(name, row[key])

    yield log


def model_card(ctx: Context, card: dict, labels: list[str], result: FitResult, device: Device,
               onnx: dict[str, Any] | None) -> dict[str, Any]:
    """What the model is, what it was trained on and with, how it scored on val, and with which software."""
    import sklearn
    import transformers

    modality, section = ctx.dataset.modality, getattr(ctx.params.finetune, ctx.dataset.modality)
    base = (section.model or BASE_MODELS["text"]) if modality == "text" else f"{section.arch} ({section.weights or 'ImageNet'})"
    return {
        "dataset": ctx.name,
        "dataset_version": card["version"],
        "modality": modality,
        "base_model": base,
        "labels": labels,
        "params": {"seed": ctx.params.seed, "threads": ctx.params.finetune.threads, "device": ctx.params.finetune.device,
                   "portable": ctx.params.finetune.portable, modality: section.model_dump(mode="json")},
        "training": {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "stopped_early": result.stopped_early,
                     **device.describe(), **({"cpu_kernels": cpu_kernels()} if device.type == "cpu" else {})},
        "metrics": {"validation": {k.removeprefix("val_"): v for k, v in result.best.items() if k.startswith("val_")}},
        "files": {"weights": "model.safetensors", "config": "classifier.json", **({"onnx": "model.onnx"} if onnx else {})},
        "software": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                     "scikit-learn": sklearn.__version__},
    }


def main(argv: list[str] | None = None) -> int:
    return stage_main("finetune", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
