"""The model stages give this machine's bytes on other CPU types (`finetune.portable`, the default).

The features -> finetune -> baselines -> evaluate chain runs in a stage process on tiny text and
image splits here, and again under QEMU's user-mode emulation of an Intel Haswell (AVX2, no AVX-512:
another vendor, other caches, another instruction set than an AMD EPYC with AVX-512) and an AMD
EPYC-Rome. Every output file must be the same bytes. Without the pins, the emulated Intel CPU gives
other bytes (the control): MKL's GEMM, torch's and numpy's vector loops and OpenBLAS choose by CPU.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, write_params
from pipeline.stages.base import kernel_settings, stage_environment
from test_finetune_stages import BASELINES, IMAGE, QUICK, TEXT, image_final, text_final

TINY = {modality: {**recipe, "epochs": 1} for modality, recipe in QUICK.items()}  # emulation runs at a fraction of the speed

QEMU = shutil.which("qemu-x86_64")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                                 reason="needs x86-64 and QEMU's user-mode emulator (Debian: apt-get install qemu-user)")]


def run_chain(root: Path, datasets: dict, final: Path, *, portable: bool = True, cpu: str | None = None) -> Path:
    """The model stages, each in a stage process, on `final`, natively or under QEMU emulating `cpu`;
    the output folder. (One process for the four would load torch once, but QEMU 7.2 crashes in it.)"""
    name = next(iter(datasets))
    root.mkdir(parents=True, exist_ok=True)
    out = root / f"out-{cpu or 'native'}-{'portable' if portable else 'free'}"
    params = write_params(root / f"{out.name}.yaml", datasets, finetune={**TINY, "portable": portable}, evaluate=BASELINES)
    # the whole stage environment up front: a stage that re-executes itself would leave the emulator
    env = {**stage_environment(dict(os.environ), **kernel_settings(["--params", str(params)])), "PYTHONPATH": str(ROOT)}
    prefix = [QEMU, "-cpu", cpu] if cpu else []
    stages = {
        "features": ["--output", str(out / "features")],
        "finetune": ["--features", str(out / "features"), "--output", str(out / "model"), "--live", str(out / "plots" / "training")],
        "baselines": ["--features", str(out / "features"), "--output", str(out / "eval" / "baselines.parquet")],
        "evaluate": ["--model", str(out / "model"), "--baselines", str(out / "eval" / "baselines.parquet"),
                     "--predictions", str(out / "eval" / "predictions.parquet"), "--plots", str(out / "plots" / "evaluate")],
    }
    for stage, paths in stages.items():
        argv = ["--dataset", name, "--params", str(params), "--metrics", str(out / "metrics" / f"{stage}.json"),
                "--ledger", str(out / "ledger" / f"{stage}.parquet"), "--data", str(final), *paths]
        done = subprocess.run([*prefix, sys.executable, "-m", f"pipeline.stages.{stage}", *argv], env=env, cwd=root,
                              capture_output=True, text=True, timeout=1800)
        errors = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("qemu-x86_64: warning"))
        assert done.returncode == 0, f"{stage} under {cpu or 'this CPU'} exited with {done.returncode}: {errors[-3000:]}"
    return out


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    root = tmp_path_factory.mktemp("portable")
    return {"text": (TEXT, text_final(root / "text")), "image": (IMAGE, image_final(root / "image"))}


@pytest.fixture(scope="module")
def native(splits, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("native")
    return {modality: run_chain(root / modality, datasets, final) for modality, (datasets, final) in splits.items()}


@pytest.mark.parametrize("modality, cpu", [("text", "Haswell"), ("image", "Haswell"), ("image", "EPYC-Rome")])
def test_the_model_stages_give_the_same_bytes_on_another_cpu(splits, native, tmp_path, modality, cpu):
    datasets, final = splits[modality]
    emulated = run_chain(tmp_path, datasets, final, cpu=cpu)
    here, there = digests(native[modality]), digests(emulated)
    assert there.keys() == here.keys()
    assert [name for name in here if here[name] != there[name]] == []


def test_without_the_pins_another_cpu_gives_other_bytes(splits, tmp_path):
    """The control: the test above can fail. Unpinned, the model differs on an emulated Intel Haswell."""
    datasets, final = splits["image"]
    free_here, free_there = (digests(run_chain(tmp_path / where, datasets, final, portable=False, cpu=cpu))
                             for where, cpu in (("here", None), ("there", "Haswell")))
    assert free_here["model/model.safetensors"] != free_there["model/model.safetensors"]
