"""Benchmark: finetune's inputs in scratch files against the same inputs held in memory, by size.

    .venv/bin/python benchmarks/bench_model_inputs.py --records 2000,8000

For each size, a train record set of `bench_text_scale`'s generated short texts is written in
shards, and the default text strategy (`partial`: all-MiniLM-L6-v2 with its embeddings and four
of six layers frozen, their output cached per token) is trained for one epoch the way the
finetune stage does it: the split read a chunk at a time (`split_frames`), the inputs made once
(`inputs`), then `fit`. It runs twice per size, each time in a fresh process: with the inputs in
a `FileStore` (what the model stages do) and in `MEMORY` (what holding the split whole costs).

It prints one JSON object: per run, seconds, peak RSS (VmHWM) and a digest of the trained
weights; per store, the peak RSS ratio of the largest size to the smallest; per size, whether
both stores trained the same weights. Target: the file store's peak grows by less than a fifth
while the records grow fourfold, and both stores give the same weights.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_text_scale import LABELS, make_rows  # noqa: E402
from measure import child_json, measured  # noqa: E402

TARGETS = {"file_store_peak_ratio": 1.2}


def write_split(folder: Path, records: int, seed: int) -> Path:
    """`records` generated texts as a shard record set."""
    import pandas as pd

    from pipeline.io import write_records
    from pipeline.records import conform, make_id, text_hash

    rows, _ = make_rows(records, seed)
    ids = [make_id("bench", i) for i in range(len(rows))]
    frame = conform(pd.DataFrame({
        "id": ids, "label": [label for _, label in rows], "text": [text for text, _ in rows],
        "content_hash": [text_hash(text) for text, _ in rows], "source": "bench",
        "source_row": list(range(1, len(rows) + 1)), "group_id": ids,
    }))
    path = folder / "train.parquet"
    write_records(frame, path)
    return path


def train(path: Path, scratch: Path, store_kind: str) -> str:
    """One epoch of the partial strategy on the split at `path`; a digest of the trained weights."""
    import torch

    from pipeline.model.device import make_deterministic
    from pipeline.model.models import classifier_for
    from pipeline.model.spill import MEMORY, FileStore, split_frames
    from pipeline.model.train import fit, recipe_for
    from pipeline.params import TextFinetuneParams

    section = TextFinetuneParams(epochs=1)
    make_deterministic(0, 2)
    model = classifier_for(section, LABELS)
    store = FileStore(scratch) if store_kind == "file" else MEMORY
    inputs = model.inputs(split_frames(path, "text"), store)
    labels = [label for chunk in split_frames(path, "label") for label in chunk["label"]]
    targets = torch.tensor([LABELS.index(label) for label in labels])
    fit(model, (inputs, targets), (inputs, targets[:0]), n_classes=len(LABELS), recipe=recipe_for(section), seed=0)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.net.state_dict().items()):
        digest.update(name.encode() + tensor.numpy().tobytes())
    return digest.hexdigest()


def run_one(records: int, seed: int, store_kind: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_model_inputs_", dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        path = write_split(folder, records, seed)
        (folder / "scratch").mkdir()
        digest, seconds, peak, _ = measured(lambda: train(path, folder / "scratch", store_kind))
        return {"records": records, "store": store_kind, "seconds": round(seconds, 2), "peak_rss_mib": peak, "weights": digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="2000,8000", help="comma-separated train split sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", choices=["file", "memory"], help="run one size with one store in this process")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.records.split(","))
    if args.single:
        print(json.dumps(run_one(sizes[0], args.seed, args.single)))
        return 0
    runs = [child_json(__file__, ["--single", kind, "--records", str(n), "--seed", str(args.seed)])
            for n in sizes for kind in ("file", "memory")]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg": [round(v, 2) for v in os.getloadavg()], "runs": runs,
                              "targets": TARGETS}
    for kind in ("file", "memory"):
        mine = [r for r in runs if r["store"] == kind]
        report[f"{kind}_store_peak_ratio"] = round(mine[-1]["peak_rss_mib"] / mine[0]["peak_rss_mib"], 2)
        report[f"{kind}_store_time_ratio"] = round(mine[-1]["seconds"] / mine[0]["seconds"], 2)
    for n in sizes:
        file_run, memory_run = (next(r for r in runs if r["records"] == n and r["store"] == k) for k in ("file", "memory"))
        report[f"same_weights_{n}"] = file_run["weights"] == memory_run["weights"]
        report[f"memory_over_file_peak_{n}"] = round(memory_run["peak_rss_mib"] / file_run["peak_rss_mib"], 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
