"""The partitioned dedup stage gives what the in-memory steps give, for any partitioning.

The reference is the single-process form of dedup: `exact_duplicates`, `near_duplicates`,
`follow_merges` and `group_ids` on the whole record set at once. The stage computes the same
clusters from partitions, shuffles and distributed connected components.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import text_records, write_params
from pipeline.engines import components as cc
from pipeline.io import write_records
from pipeline.ledger import Ledger
from pipeline.params import DedupParams
from pipeline.records import conform, make_id, pixel_hash
from pipeline.stages import dedup as dedup_stage
from pipeline.steps.dedup import exact_duplicates, follow_merges, group_ids, near_duplicates

WORDS = [f"{a}{b}{c}" for a in "bdfgklmnprst" for b in "aeiou" for c in "lmnrst"]


def text_corpus(n: int = 240, seed: int = 3) -> pd.DataFrame:
    """Texts with exact copies, near copies (chains of edits), label conflicts and loose look-alikes."""
    gen = np.random.default_rng(seed)
    base = [" ".join(gen.choice(WORDS, 14)) for _ in range(n // 2)]
    rows = [(str(gen.choice(["a", "b", "c"])), t) for t in base]
    for i in range(n // 2):
        label, text = rows[int(gen.integers(len(rows)))]
        words = text.split()
        for _ in range(int(gen.integers(0, 4))):
            words[int(gen.integers(len(words)))] = str(gen.choice(WORDS))
        rows.append((label if gen.random() < 0.85 else str(gen.choice(["a", "b", "c"])), " ".join(words)))
    return text_records(rows)


def image_corpus(n: int = 60, seed: int = 5) -> pd.DataFrame:
    """Images with re-encoded copies, slightly changed copies and label conflicts."""
    gen = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        if i >= n // 2 and gen.random() < 0.7:
            pixels = rows[int(gen.integers(n // 2))][1].copy()
            pixels[: int(gen.integers(0, 4)), :] = gen.integers(0, 256, 3)
        else:
            pixels = gen.integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
        rows.append((str(gen.choice(["x", "y"])), pixels))
    blobs = []
    for _, pixels in rows:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        blobs.append(buffer.getvalue())
    ids = [make_id("img", i) for i in range(n)]
    return conform(pd.DataFrame({
        "id": ids, "label": [r[0] for r in rows], "image": blobs, "width": 32, "height": 32,
        "content_hash": [pixel_hash("RGB", (32, 32), r[1].tobytes()) for r in rows], "source": "mem", "group_id": ids,
    }))


def reference(records: pd.DataFrame, modality: str, params: DedupParams) -> tuple[pd.DataFrame, list[dict]]:
    """The whole record set at once, as dedup ran before it was partitioned."""
    ledger = Ledger("dedup")
    exact = exact_duplicates(records, params)
    kept = exact.kept
    near = near_duplicates(kept, modality, params) if params.near and len(kept) > 1 else None
    if near is not None:
        ledger.record(follow_merges(exact.fates, near.fates), near.fates)
        kept = near.kept
    else:
        ledger.record(exact.fates)
    kept = kept.assign(group_id=group_ids(kept, modality, params)) if len(kept) > 1 else kept
    return kept, ledger.table().to_pylist()


def shard_bytes(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def run_stage(tmp_path: Path, records: pd.DataFrame, modality: str, dedup: dict, engine: dict) -> tuple[list[bytes], list[dict], dict]:
    dataset = {"modality": modality, "source": "x", "format": "tsv" if modality == "text" else "image_folder"}
    params = write_params(tmp_path / "params.yaml", {"d": dataset}, dedup=dedup, engine=engine)
    write_records(records, tmp_path / "normalise.parquet")
    args = ["--dataset", "d", "--params", str(params), "--input", str(tmp_path / "normalise.parquet"),
            "--output", str(tmp_path / "dedup.parquet"), "--ledger", str(tmp_path / "ledger.parquet"),
            "--metrics", str(tmp_path / "metrics.json")]
    assert dedup_stage.main(args) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    return shard_bytes(tmp_path / "dedup.parquet"), pq.read_table(tmp_path / "ledger.parquet").to_pylist(), metrics


slow = pytest.mark.slow
CASES = [  # (modality, dedup params, partition_rows): 37 makes 7 text partitions; 224 makes 9 image partitions
    ("text", {}, 37),
    ("image", {}, 224),
    pytest.param("text", {}, 100_000, marks=slow),
    pytest.param("text", {"conflicts": "drop", "survivor": "longest"}, 37, marks=slow),
    pytest.param("text", {"conflicts": "keep", "text": {"shingle": "word", "threshold": 0.6, "group_threshold": 0.3}}, 37, marks=slow),
    pytest.param("text", {"near": False, "key": "content_and_label", "text": {"verify": "estimate"}}, 37, marks=slow),
    pytest.param("image", {}, 32, marks=slow),  # one image per partition
    pytest.param("image", {"conflicts": "drop", "image": {"max_distance": 8, "group_max_distance": 14}}, 224, marks=slow),
]


@pytest.mark.parametrize(("modality", "dedup", "partition_rows"), CASES)
def test_partitioned_dedup_equals_the_whole_set_at_once(tmp_path, modality, dedup, partition_rows):
    records = text_corpus() if modality == "text" else image_corpus()
    want_records, want_ledger = reference(records, modality, DedupParams.model_validate(dedup))
    got_records, got_ledger, metrics = run_stage(tmp_path, records.sample(frac=1, random_state=2), modality, dedup,
                                                 {"partition_rows": partition_rows})
    assert got_ledger == want_ledger
    write_records(want_records, tmp_path / "want.parquet")
    assert got_records == shard_bytes(tmp_path / "want.parquet")
    assert metrics["in"] == len(records) and metrics["out"] == len(want_records)
    assert any(r["reason"] == "near_duplicate" for r in want_ledger) or dedup.get("near") is False


@pytest.mark.slow
def test_distributed_components_give_the_same_clusters(tmp_path, monkeypatch):
    """With no edges gathered (large-star / small-star rounds only), the outputs do not change."""
    records = text_corpus(seed=9)
    (tmp_path / "local").mkdir(), (tmp_path / "rounds").mkdir()
    want = run_stage(tmp_path / "local", records, "text", {}, {"partition_rows": 90})
    monkeypatch.setattr(cc, "LOCAL_EDGES", 0)
    got = run_stage(tmp_path / "rounds", records, "text", {}, {"partition_rows": 90})
    assert got[1] == want[1] and got[0] == want[0]
