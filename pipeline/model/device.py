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


# MKL's conditional-numerical-reproducibility branches (mkl_cbwr.h), by the number it reports.
MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


def cpu_kernels() -> dict[str, str | None]:
    """The CPU float kernels in force in this process, as each library reports them: torch's vector
    capability, MKL's reproducible branch (BRANCH_OFF: none, MKL picks by CPU), OpenBLAS's core
    type and numpy's widest dispatched instruction group (None where a library does not say)."""
    return {"torch": torch.backends.cpu.get_cpu_capability(), "mkl": _mkl_branch(), "openblas": _openblas_core(),
            "numpy": _numpy_group()}


def _mkl_branch() -> str | None:
    import ctypes

    torch.ones(2, 2) @ torch.ones(2, 2)  # MKL reads its settings on its first call
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        code = lib.mkl_serv_cbwr_get(1)  # MKL_CBWR_BRANCH
    except (OSError, AttributeError):
        return None
    return MKL_BRANCHES.get(code & 0xFFFF, str(code))


def _openblas_core() -> str | None:
    from threadpoolctl import threadpool_info

    cores = sorted({str(lib.get("architecture")) for lib in threadpool_info() if lib.get("internal_api") == "openblas"})
    return ", ".join(cores) or None


def _numpy_group() -> str | None:
    from numpy._core._multiarray_umath import __cpu_features__ as features

    return next((group for group in ("X86_V4", "X86_V3", "X86_V2") if features.get(group)), None)
