"""Shared fixtures: small params and record sets built in memory, and the path to shared datasets."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.params import Params
from pipeline.records import conform, make_id, text_hash

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def make_params(datasets: dict | None = None, **sections) -> Params:
    """Params with one text dataset `t` (or the given datasets) and any section overrides."""
    datasets = datasets or {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}
    return Params.model_validate({"datasets": datasets, **sections})


def write_params(path: Path, datasets: dict | None = None, **sections) -> Path:
    """Write a params.yaml with the given datasets and sections; return its path."""
    raw = {"datasets": datasets or {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}, **sections}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def text_records(rows: list[tuple[str, str]], *, group_ids: list[str] | None = None) -> pd.DataFrame:
    """A text record set from (label, text) rows, ids derived from the row number."""
    ids = [make_id("mem", i) for i in range(len(rows))]
    return conform(pd.DataFrame({
        "id": ids,
        "label": [r[0] for r in rows],
        "text": [r[1] for r in rows],
        "content_hash": [text_hash(r[1]) for r in rows],
        "source": "mem",
        "source_row": list(range(1, len(rows) + 1)),
        "group_id": group_ids or ids,
    }))


@pytest.fixture
def shared_datasets() -> Path:
    """`../shared/datasets`, or a skip saying why (a user's machine has no shared folder)."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (they exist beside the checkout in CI only)")
    return SHARED


@pytest.fixture
def stage_log(caplog):
    """caplog, also attached to the `pipeline` logger: stage_main's basicConfig(force=True) strips root handlers."""
    logger = logging.getLogger("pipeline")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)
