"""Benchmark: what `finetune.portable` (CPU kernels pinned to AVX2, alike on Intel and AMD) costs.

    .venv/bin/python benchmarks/bench_portable.py [--texts 600] [--images 240] [--rounds 2]

Seeded final splits (texts of `bench_text_scale`'s vocabulary in three classes; 64-pixel shape
pictures drawn as the demo draws them) go through the model stages, features -> finetune ->
baselines -> evaluate, each stage in a process of its own as `dvc repro` runs it, once with
`portable: true` and once with `portable: false`, alternating, `--rounds` times. It prints one
JSON object: seconds per stage and setting (the median over rounds), and per modality the ratio of
the portable chain's time to the free one's. The free setting lets each library take this CPU's
fastest kernels (here AVX-512 in torch, numpy and oneDNN, MKL's own pick), so the ratio is the price
of the same bytes on every x86-64 machine.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_text_scale import make_rows  # noqa: E402
from measure import stage_process  # noqa: E402
from pipeline.io import write_json, write_records  # noqa: E402
from pipeline.records import conform, make_id, text_hash  # noqa: E402

STAGES = ("features", "finetune", "baselines", "evaluate")
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}


def text_splits(n: int, seed: int) -> dict[str, pd.DataFrame]:
    rows, _ = make_rows(n, seed)
    ids = [make_id("bench-portable", i) for i in range(n)]
    frame = conform(pd.DataFrame({"id": ids, "label": [label for _, label in rows], "text": [text for text, _ in rows],
                                  "content_hash": [text_hash(text) for text, _ in rows], "source": "bench", "group_id": ids}))
    return _cut(frame)


def image_splits(n: int, seed: int) -> dict[str, pd.DataFrame]:
    from pipeline.demo import SHAPES, draw_shape
    from pipeline.seeding import rng

    gen = rng(seed, "bench-portable")
    shapes = [list(SHAPES)[int(i)] for i in gen.integers(len(SHAPES), size=n)]
    encoded = [_png(draw_shape(shape, 64, gen)) for shape in shapes]
    ids = [make_id("bench-portable-image", i) for i in range(n)]
    frame = conform(pd.DataFrame({"id": ids, "label": shapes, "image": encoded, "width": 64, "height": 64,
                                  "content_hash": [hashlib.sha256(data).hexdigest() for data in encoded], "source": "bench", "group_id": ids}))
    return _cut(frame)


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _cut(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Consecutive rows as train, val and test (the rows are in seeded random order)."""
    ends = np.cumsum([round(len(frame) * share) for share in SPLITS.values()])
    starts = [0, *ends[:-1].tolist()]
    return {name: frame.iloc[start:end].sort_values("id", ignore_index=True) for name, start, end in zip(SPLITS, starts, ends)}


def write_final(folder: Path, splits: dict[str, pd.DataFrame]) -> Path:
    for name, frame in splits.items():
        write_records(frame, folder / f"{name}.parquet")
    write_json({"version": "bench"}, folder / "card.json")
    return folder


def write_params(folder: Path, modality: str, portable: bool) -> Path:
    path = folder / f"params-{modality}-{portable}.yaml"
    dataset = {"modality": modality, "source": "unused", "format": "tsv" if modality == "text" else "image_folder"}
    path.write_text(yaml.safe_dump({"datasets": {"bench": dataset}, "finetune": {"portable": portable}}, sort_keys=False))
    return path


def run_chain(folder: Path, final: Path, params: Path, tag: str) -> dict[str, float]:
    """Seconds of each model stage, each in a fresh process."""
    out = folder / tag
    paths = {
        "features": ["--output", str(out / "features")],
        "finetune": ["--features", str(out / "features"), "--output", str(out / "model")],
        "baselines": ["--features", str(out / "features"), "--output", str(out / "baselines.parquet")],
        "evaluate": ["--model", str(out / "model"), "--baselines", str(out / "baselines.parquet"),
                     "--predictions", str(out / "predictions.parquet"), "--plots", str(out / "plots")],
    }
    seconds = {}
    for stage in STAGES:
        argv = ["--dataset", "bench", "--params", str(params), "--data", str(final), "--metrics", str(out / f"{stage}.json"),
                *paths[stage]]
        code, took, _ = stage_process(stage, argv)
        if code != 0:
            raise SystemExit(f"{stage} ({tag}) failed with exit code {code}")
        seconds[stage] = took
    return seconds


def bench(modality: str, n: int, rounds: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_portable_", dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        final = write_final(folder / "final", text_splits(n, seed) if modality == "text" else image_splits(n, seed))
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for k in range(rounds):
            for portable in ((True, False) if k % 2 == 0 else (False, True)):
                runs[portable].append(run_chain(folder, final, write_params(folder, modality, portable), f"{portable}-{k}"))
    median = {p: {s: round(statistics.median(r[s] for r in runs[p]), 2) for s in STAGES} for p in runs}
    total = {p: sum(median[p].values()) for p in runs}
    return {"records": n, "portable_seconds": median[True], "free_seconds": median[False],
            "portable_over_free": round(total[True] / total[False], 3),
            "per_stage_ratio": {s: round(median[True][s] / median[False][s], 3) for s in STAGES}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    report = {"cpus": os.cpu_count(), "load_avg_before": [round(v, 2) for v in load],
              "text": bench("text", args.texts, args.rounds, args.seed), "image": bench("image", args.images, args.rounds, args.seed)}
    report["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
