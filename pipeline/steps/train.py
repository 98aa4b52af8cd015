"""The training loop: seeded, deterministic, selecting the epoch with the best validation macro-F1."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.steps.scores import macro_f1


class Classifier(Protocol):
    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...
    def trainable(self) -> nn.Module: ...
    def train_mode(self, training: bool) -> None: ...


@dataclass(slots=True)
class FitResult:
    """Per-epoch history and the epoch whose weights were kept."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0


def make_deterministic(seed: int, threads: int) -> None:
    """Seed torch, force deterministic kernels and pin the thread count (it changes the bits)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def _take(inputs: dict[str, torch.Tensor], index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    return {k: v[index] for k, v in inputs.items()}


def _size(inputs: dict[str, torch.Tensor]) -> int:
    return len(next(iter(inputs.values())))


def predict_logits(model: Classifier, inputs: dict[str, torch.Tensor], batch_size: int) -> np.ndarray:
    """Logits for every row of `inputs`, in eval mode."""
    model.train_mode(False)
    n = _size(inputs)
    with torch.inference_mode():
        parts = [model.logits(_take(inputs, slice(s, s + batch_size))) for s in range(0, n, batch_size)]
    return torch.cat(parts).float().numpy() if parts else np.zeros((0, 0), dtype=np.float32)


def fit(
    model: Classifier,
    train: tuple[dict[str, torch.Tensor], torch.Tensor],
    val: tuple[dict[str, torch.Tensor], torch.Tensor],
    *,
    n_classes: int,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
) -> FitResult:
    """Train with AdamW on shuffled batches; keep the weights of the best validation epoch."""
    (x, y), (vx, vy) = train, val
    module = model.trainable()
    params = [p for p in module.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    order = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    result, best_score, best_state = FitResult(), -1.0, None
    for epoch in range(1, epochs + 1):
        loss = _epoch(model, optimiser, loss_fn, x, y, batch_size, order, f"epoch {epoch}/{epochs}")
        score = _validate(model, vx, vy, n_classes, batch_size)
        result.history.append({"epoch": epoch, "train_loss": round(loss, 6), "val_macro_f1": round(score, 6)})
        if score > best_score or len(vy) == 0:  # without val, the last epoch is kept
            best_score, best_state, result.best_epoch = score, copy.deepcopy(module.state_dict()), epoch
    if best_state is not None:
        module.load_state_dict(best_state)
    return result


def _epoch(model, optimiser, loss_fn, x, y, batch_size, order, desc) -> float:
    model.train_mode(True)
    permutation = torch.randperm(len(y), generator=order)
    total, seen = 0.0, 0
    for start in tqdm(range(0, len(y), batch_size), desc=desc, disable=None, leave=False):
        index = permutation[start : start + batch_size]
        optimiser.zero_grad(set_to_none=True)
        loss = loss_fn(model.logits(_take(x, index)), y[index])
        loss.backward()
        optimiser.step()
        total, seen = total + loss.item() * len(index), seen + len(index)
    return total / max(1, seen)


def _validate(model, vx, vy, n_classes: int, batch_size: int) -> float:
    if len(vy) == 0:
        return 0.0
    predicted = predict_logits(model, vx, batch_size * 4).argmax(axis=1)
    return macro_f1(vy.numpy(), predicted, n_classes)
