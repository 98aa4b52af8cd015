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
