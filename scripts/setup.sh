#!/usr/bin/env bash
# Set up from a fresh clone and run the demo pipeline: venv, pinned install, dvc repro.
# Safe to run again: an existing .venv is reused and dvc repro only runs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'

export DVC_NO_ANALYTICS=1 NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch==2.13.0 is pinned in the lock: it installs the CPU wheel, never a CUDA build.
.venv/bin/python -m pip install --quiet -r requirements.lock
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .

.venv/bin/dvc repro
.venv/bin/dvc metrics show
