"""Where torch runs, and the settings that make it give the same bits on every run.

CPU by default; CUDA with mixed precision when a GPU is present (`choose_device("auto")`). The
choice is recorded in the stage metrics and the model card.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Literal

import torch


@dataclass(slots=True, frozen=True)
class Device:
    """Where tensors live and which autocast dtype (None: full precision) the forward pass uses."""

    type: Literal["cpu", "cuda"] = "cpu"
    amp: Literal["bfloat16", "float16"] | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass on CUDA; nothing on the CPU."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.type, dtype=getattr(torch, self.amp))

    def put(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's tensors on this device."""
        if self.type == "cpu":
            return batch
        return {k: v.to(self.type, non_blocking=True) for k, v in batch.items()}

    def describe(self) -> dict[str, Any]:
        return {"device": self.type, "amp": self.amp}


CPU = Device()


def choose_device(requested: Literal["auto", "cpu", "cuda"] = "auto") -> Device:
    """CUDA with mixed precision when asked for or (auto) present, else the CPU in full precision.

    bfloat16 autocast where the GPU supports it (no loss scaling needed), float16 otherwise.
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return CPU
    if not torch.cuda.is_available():
        raise RuntimeError("finetune.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return Device("cuda", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")


def make_deterministic(seed: int, threads: int) -> None:
    """Seed torch, force deterministic kernels and pin the CPU thread count (it changes the bits)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS is deterministic only with this
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(threads)
