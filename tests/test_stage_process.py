"""A stage run as a script runs in the stage environment, whatever the caller's environment holds."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

PROBE = '''
import json, os, sys
from pipeline.stages.base import entry

def main():
    keys = ["PYTHONHASHSEED", "HF_HUB_OFFLINE", "TRANSFORMERS_VERBOSITY", "NO_ALBUMENTATIONS_UPDATE"]
    print(json.dumps({"env": {k: os.environ.get(k) for k in keys}, "hash_randomization": sys.flags.hash_randomization}))
    return 0

if __name__ == "__main__":
    entry("probe_env", main)
'''


def test_entry_pins_the_hash_seed_and_fills_in_the_library_defaults(tmp_path):
    (tmp_path / "probe_env.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHASHSEED", "TRANSFORMERS_VERBOSITY", "NO_ALBUMENTATIONS_UPDATE")}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", PYTHONHASHSEED="123", HF_HUB_OFFLINE="0")
    out = subprocess.run([sys.executable, "-m", "probe_env"], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["hash_randomization"] == 0
    assert seen["env"] == {"PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "0",  # a value the user set wins, but the hash seed
                           "TRANSFORMERS_VERBOSITY": "error", "NO_ALBUMENTATIONS_UPDATE": "1"}


KERNEL_PROBE = '''
import json, os
from pipeline.stages.base import entry, PORTABLE_ENV

def main():
    from pipeline.model.device import cpu_kernels
    print(json.dumps({"kernels": cpu_kernels(), "env": {k: os.environ.get(k) for k in [*PORTABLE_ENV, "OPENBLAS_NUM_THREADS"]}}))
    return 0

if __name__ == "__main__":
    entry("probe_kernels", main)
'''


def _kernels_seen(tmp_path, finetune: dict, **env: str) -> dict:
    from conftest import write_params

    (tmp_path / "probe_kernels.py").write_text(KERNEL_PROBE)
    params = write_params(tmp_path / "params.yaml", finetune=finetune)
    clean = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA",
                                                            "OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES", "OPENBLAS_NUM_THREADS")}
    clean.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", **env)
    out = subprocess.run([sys.executable, "-m", "probe_kernels", "--params", str(params)], env=clean, cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_stage_process_runs_the_portable_kernels_whatever_the_caller_set(tmp_path):
    """finetune.portable (the default): the process runs AVX2 kernels in torch, MKL's COMPATIBLE
    branch, OpenBLAS's Haswell kernels and numpy's AVX2 loops, as the libraries themselves report,
    with OpenBLAS on finetune's thread count; a caller's own choice does not leak in."""
    seen = _kernels_seen(tmp_path, {"threads": 3}, ATEN_CPU_CAPABILITY="default", MKL_CBWR="AUTO")
    assert seen["kernels"] == {"torch": "AVX2", "mkl": "COMPATIBLE", "openblas": "Haswell", "numpy": "X86_V3"}
    assert seen["env"]["OPENBLAS_NUM_THREADS"] == "3" and seen["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_portable_false_leaves_the_kernels_to_the_libraries(tmp_path):
    seen = _kernels_seen(tmp_path, {"portable": False}, MKL_CBWR="AUTO")
    assert seen["env"] == {"ATEN_CPU_CAPABILITY": None, "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": None, "OPENBLAS_CORETYPE": None,
                           "NPY_DISABLE_CPU_FEATURES": None, "OPENBLAS_NUM_THREADS": None}
    assert seen["kernels"]["mkl"] == "AUTO"
