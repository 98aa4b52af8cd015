"""Benchmark: clean -> normalise -> dedup on generated images, by engine and size.

    .venv/bin/python benchmarks/bench_image_scale.py --images 50000,200000 --engine both

The corpus is an image folder (root/<label>/<file>.png) of seeded 48-pixel pictures drawn as the
demo draws them (a shape on a textured gradient, `pipeline.demo.draw_shape`): 80% originals, 10%
exact copies of an original (the same bytes under another name) and 10% near copies (an original
re-encoded as a quality-70 JPEG). For each size and engine the real stages run one after the
other, each in a process of its own, with default params but `engine`, as `bench_engine_scale`
runs them:

* local: the default engine, in the stage's process; peak RSS per stage is that process's;
* dask: a LocalCluster of 2 worker processes of 3 GB each, joined by every stage through
  `engine.dask.scheduler_address`; each worker's peak RSS (ru_maxrss over the run) besides.

It prints one JSON object: per run, seconds and peak RSS per stage, dedup's merges by reason and
how many planted copies it merged, and a digest of the outputs; per engine, the time and peak RSS
ratios of the largest size to the smallest; with `both`, the dask/local time ratio per size and
whether the two engines wrote the same bytes. Target (issue 16): peak memory flat in the corpus
size (the ratio of the peaks well under the ratio of the sizes), dask workers each under 3 GB.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from measure import bench_engine, child_json, engine_ratios, run_stages  # noqa: E402

STAGES = ("clean", "normalise", "dedup")
SIZE = 48
TARGETS = {"dask_worker_peak_gib": 3.0}


def write_corpus(folder: Path, images: int, seed: int) -> dict[str, int]:
    """The image folder under `folder/images`; the counts of what was planted. The ids of each
    planted (original, copy) pair go to `folder/planted.json` (an image's id is made of its path in
    the folder)."""
    from PIL import Image

    from pipeline.demo import SHAPES, draw_shape
    from pipeline.records import make_id
    from pipeline.seeding import rng

    gen = rng(seed, "bench-image-scale")
    names = list(SHAPES)
    n_exact = n_near = images // 10
    n_orig = images - n_exact - n_near
    originals: list[tuple[str, bytes]] = []
    pairs: list[tuple[str, str]] = []
    for i in range(n_orig):
        shape = names[int(gen.integers(len(names)))]
        originals.append((shape, _encoded(draw_shape(shape, SIZE, gen), "PNG")))
        _write(folder / "images" / shape / f"{i:07d}.png", originals[-1][1])
    for k, i in enumerate(gen.choice(n_orig, size=n_exact + n_near, replace=False).tolist()):
        shape, data = originals[i]
        copy = f"{shape}/copy_{k:07d}.png" if k < n_exact else f"{shape}/near_{k:07d}.jpg"
        pairs.append((make_id(f"{shape}/{i:07d}.png", ""), make_id(copy, "")))
        if k < n_exact:
            _write(folder / "images" / copy, data)
        else:
            with Image.open(io.BytesIO(data)) as image:
                _write(folder / "images" / copy, _encoded(image.convert("RGB"), "JPEG", quality=70))
    (folder / "planted.json").write_text(json.dumps(pairs))
    return {"originals": n_orig, "exact_copies": n_exact, "near_copies": n_near}


def _encoded(image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_params(folder: Path, engine: dict[str, Any]) -> Path:
    path = folder / "params.yaml"
    dataset = {"modality": "image", "source": "images", "format": "image_folder", "labels": ["circle", "square", "triangle"]}
    path.write_text(yaml.safe_dump({"datasets": {"bench": dataset}, "engine": engine}, sort_keys=False))
    return path


def merges(folder: Path) -> dict[str, int]:
    """Dedup's merges by reason, and of the planted (original, copy) pairs how many it merged (one
    of the two merged into a record: each original is copied at most once)."""
    import pyarrow.parquet as pq

    ledger = pq.read_table(folder / "out" / "dedup.ledger.parquet", columns=["id", "fate", "reason"]).to_pandas()
    merged = ledger[ledger["fate"] == "merged"]
    ids = set(merged["id"])
    pairs = json.loads((folder / "planted.json").read_text())
    found = sum(1 for original, copy in pairs if original in ids or copy in ids)
    return {**merged["reason"].value_counts().sort_index().to_dict(), "planted_pairs_merged": found, "planted_pairs": len(pairs)}


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("normalise.parquet", "dedup.parquet"):
        for path in sorted(p for p in (folder / "data" / name).rglob("*.parquet") if p.is_file()):
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def run_one(images: int, seed: int, kind: str, partition_rows: int) -> dict[str, Any]:
    """One size under one engine, in this (fresh) process."""
    with tempfile.TemporaryDirectory(prefix="bench_image_scale_", dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        planted = write_corpus(folder, images, seed)
        with bench_engine(kind, partition_rows) as (engine, workers):
            stages = run_stages(folder, write_params(folder, engine), STAGES)
        total = sum(s["seconds"] for s in stages.values())
        return {"images": images, "engine": kind, "partition_rows": partition_rows, "planted": planted, "stages": stages,
                "seconds": round(total, 2), "images_per_s": round(images / total),
                "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values()), **workers,
                "merges": merges(folder), "digest": digest(folder)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="50000,200000", help="comma-separated corpus sizes")
    parser.add_argument("--engine", choices=["local", "dask", "both"], default="both")
    parser.add_argument("--partition-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", action="store_true", help="run one size and engine in this process")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.images.split(","))
    kinds = ["local", "dask"] if args.engine == "both" else [args.engine]
    if args.single:
        print(json.dumps(run_one(sizes[0], args.seed, kinds[0], args.partition_rows)))
        return 0
    load_before = os.getloadavg()
    runs = [child_json(__file__, ["--single", "--images", str(n), "--seed", str(args.seed), "--engine", kind,
                                  "--partition-rows", str(args.partition_rows)]) for n in sizes for kind in kinds]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_before": [round(v, 2) for v in load_before],
                              "load_avg_after": [round(v, 2) for v in os.getloadavg()], "runs": runs, "targets": TARGETS}
    report.update(engine_ratios(runs, kinds, "images"))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
