"""Benchmark: the project's image ingest + normalise path against a bare Pillow loop, same files.

    .venv/bin/python benchmarks/bench_image_ingest.py [--repeat 3] [--rounds 3]

The files are the 398 hymenoptera images from ../shared/datasets (read in place, never copied),
or, where that folder is absent, 400 generated JPEGs of 500 x 375 pixels. Their bytes are read
into memory once, and the list is repeated `--repeat` times so each timing lasts a few seconds.
Then, in one run, each round times

* bare: for each file, PIL `Image.open` (from the bytes), `load()`, `convert("RGB")` and
  `resize((size, size))` (Pillow's default filter) in a plain loop, one process;
* bare_same_work (for information, no target): the same library calls the project makes, in a
  flat loop with no engine, no params and no records: `verify` and SHA-256 of the file (clean);
  one decode (JPEG draft at the working side), RGB, OpenCV's reduction to the working side and
  the quality measures, the centre crop of the decoded pixels reduced (with a Gaussian blur) to
  the output size, PNG encode and SHA-256 of the pixels (normalise). The two reductions call
  `pipeline.steps.pixels` (two or three OpenCV calls each), so the filter is the project's own. It shows what the project adds over its libraries;
* project, 1 and 2 workers: what the clean and normalise stages do per image, through the local
  engine: `map_chunks(inspect_images)` (pixel limit from the header, `verify`, file hash; no pixel
  is decoded; in this process, as the clean stage does) then `map_chunks(normalise_images)` on the kept images (the one full decode, EXIF
  orientation, RGB, the quality measures, shorter-side crop, PNG encode, pixel hash), default
  params from `pipeline.params` (`engine.chunk_size`, clean.image, normalise.image) and the
  stages' chunking (`chunk_size_for`: `engine.chunk_size // 8` images per chunk in normalise).

The project's outputs with 1 and 2 workers must be equal. Rounds are interleaved (bare,
bare_same_work, 1 worker, 2 workers, ...) so a change in machine load hits every path; the ratios
use the median wall seconds over the rounds, and the per-round ratios are printed too. Since the
machine may be shared, the load average before and after is reported, and so is each path's CPU
time (this process plus its finished workers): a 2-worker wall-clock speedup needs two idle
cores, while the CPU ratio shows what the pool costs in extra work. OpenCV is held to one thread
before anything runs (forked workers inherit it), so every path uses one core per process; the
stages leave OpenCV's default, which may add a thread per core to a single worker.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.engines import chunk_size_for, map_chunks  # noqa: E402
from pipeline.params import EngineParams, ImageCleanParams, ImageNormaliseParams  # noqa: E402
from pipeline.steps.clean import inspect_images  # noqa: E402
from pipeline.steps.normalise import normalise_images  # noqa: E402
from pipeline.steps.pixels import resample, shrink_to_side  # noqa: E402
from measure import timed  # noqa: E402

HYMENOPTERA = ROOT.parent / "shared" / "datasets" / "hymenoptera"
TARGETS = {"project_1w_over_bare": 0.85, "project_2w_over_project_1w": 1.7}


def load_files(folder: Path, *, fallback: int = 400) -> tuple[list[bytes], str]:
    """Bytes of every file under `folder` (sorted), or of generated JPEGs where it is absent."""
    if folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return [f.read_bytes() for f in files], f"{folder.name}: {len(files)} files"
    return [_generated_jpeg(i) for i in range(fallback)], f"generated: {fallback} JPEGs 500x375 (hymenoptera absent)"


def _generated_jpeg(index: int) -> bytes:
    """A smooth random photo-like picture: gradients plus blurred noise, JPEG quality 90."""
    gen = np.random.default_rng(index)
    yy, xx = np.mgrid[:375, :500].astype(np.float32)
    base = gen.uniform(40, 200, 3) + gen.uniform(-0.2, 0.2, 3) * xx[..., None] + gen.uniform(-0.2, 0.2, 3) * yy[..., None]
    noise = gen.normal(0, 30, (47, 63, 3)).repeat(8, 0).repeat(8, 1)[:375, :500]
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


# --- the paths compared ---------------------------------------------------------------------

def bare(blobs: list[bytes], size: int) -> list[tuple[int, int]]:
    """Pillow open, load, convert to RGB and resize, in a plain loop."""
    out = []
    for data in blobs:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            out.append(image.convert("RGB").resize((size, size)).size)
    return out


def bare_same_work(blobs: list[bytes], size: int, *, side: int = 256, png_level: int = 1) -> list[str]:
    """The project's library calls per image (see the module docstring), in a flat loop."""
    out = []
    for data in blobs:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        file_hash = hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(side, size), max(side, size)))
            image.load()
            pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        small = shrink_to_side(np.ascontiguousarray(pixels), side, anti_alias=False)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        counts = np.bincount(grey.ravel(), minlength=256)
        p = counts[counts > 0] / grey.size
        r, g, b = cv2.split(small)
        _ = (cv2.meanStdDev(grey), -(p * np.log2(p)).sum(), cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_16S)),
             cv2.mean(cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))), file_hash)
        height, width = pixels.shape[:2]
        crop = min(height, width)
        top, left = (height - crop) // 2, (width - crop) // 2
        fitted = resample(pixels[top:top + crop, left:left + crop], (size, size))
        cv2.imencode(".png", cv2.cvtColor(fitted, cv2.COLOR_RGB2BGR), [
            cv2.IMWRITE_PNG_COMPRESSION, png_level, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE])
        out.append(hashlib.sha256(fitted.tobytes()).hexdigest())
    return out


def project(blobs: list[bytes], workers: int) -> tuple[list, dict[str, float]]:
    """clean's inspect then normalise's normalise on the kept images, through the local engine."""
    chunk = EngineParams().chunk_size
    start = time.perf_counter()
    # clean inspects image files in its own process whatever engine.workers says (header reads and
    # hashes cost less than shipping the bytes to a worker): see pipeline/stages/clean.py
    verdicts = map_chunks(functools.partial(inspect_images, params=ImageCleanParams()), blobs, workers=1, chunk_size=chunk)
    kept = [data for data, verdict in zip(blobs, verdicts) if verdict.reason is None]
    middle = time.perf_counter()
    normalised = map_chunks(functools.partial(normalise_images, params=ImageNormaliseParams()), kept, workers=workers,
                            chunk_size=chunk_size_for("image", chunk))  # as the normalise stage
    end = time.perf_counter()
    return [verdicts, normalised], {"clean_s": middle - start, "normalise_s": end - middle}


# --- the run --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="times the file list is repeated (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; ratios use the medians (default 3)")
    parser.add_argument("--folder", type=Path, default=HYMENOPTERA)
    args = parser.parse_args(argv)

    cv2.setNumThreads(1)  # one core per process, like the bare loop; forked workers inherit it
    files, what = load_files(args.folder)
    blobs = files * args.repeat
    size = ImageNormaliseParams().size
    load_before = os.getloadavg()
    project(blobs[:8], 1)  # warm imports and caches outside the timings
    paths: dict[str, Callable[[], Any]] = {
        "bare": lambda: bare(blobs, size),
        "bare_same_work": lambda: bare_same_work(blobs, size, side=ImageNormaliseParams().quality.working_side,
                                         png_level=ImageNormaliseParams().png_compress_level),
        "project_1w": lambda: project(blobs, 1),
        "project_2w": lambda: project(blobs, 2),
    }
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    phases: dict[str, list[dict[str, float]]] = {"project_1w": [], "project_2w": []}
    outputs: dict[str, Any] = {}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            outputs[name], w, c = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
            if name in phases:
                phases[name].append(outputs[name][1])
        if outputs["project_1w"][0] != outputs["project_2w"][0]:
            raise SystemExit("project output with 2 workers differs from 1 worker")
    kept = sum(v.reason is None for v in outputs["project_1w"][0][0])
    print(json.dumps(report(what, args, len(blobs), size, wall, cpu, phases, load_before, kept=kept)))
    return 0


def report(what: str, args: argparse.Namespace, images: int, size: int, wall: dict[str, list[float]],
           cpu: dict[str, list[float]], phases: dict[str, list[dict[str, float]]], load_before: tuple[float, ...],
           *, kept: int) -> dict[str, Any]:
    """The JSON object: throughput, ratios (of median wall seconds), CPU seconds, targets, load."""
    median = {name: statistics.median(values) for name, values in wall.items()}
    ratios = {"project_1w_over_bare": median["bare"] / median["project_1w"],  # throughput: project over bare
              "project_2w_over_project_1w": median["project_1w"] / median["project_2w"]}
    per_round = [{"project_1w_over_bare": round(b / p1, 3), "project_2w_over_project_1w": round(p1 / p2, 3)}
                 for b, p1, p2 in zip(wall["bare"], wall["project_1w"], wall["project_2w"])]
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "files": what, "repeat": args.repeat, "images": images, "kept_by_clean": kept, "size": size,
        "chunk_size": EngineParams().chunk_size, "rounds": args.rounds, "cpus": os.cpu_count(),
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "load_avg_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        "images_per_s": {name: round(images / s, 1) for name, s in median.items()},
        "project_phase_s": {name: {k: round(statistics.median(p[k] for p in rows), 3) for k in rows[0]}
                            for name, rows in phases.items()},
        "ratios": {**{k: round(v, 3) for k, v in ratios.items()},
                   "project_1w_over_bare_same_work": round(median["bare_same_work"] / median["project_1w"], 3)},
        "ratios_per_round": per_round,
        "targets": {name: {"target": f">= {limit}", "holds": round(ratios[name], 3) >= limit} for name, limit in TARGETS.items()},
        "cpu_s": {name: round(s, 2) for name, s in cpu_median.items()},
        "cpu_ratios": {"project_1w_over_bare": round(cpu_median["bare"] / cpu_median["project_1w"], 3),
                       "project_2w_cpu_over_1w_cpu": round(cpu_median["project_2w"] / cpu_median["project_1w"], 3)},
        "bare_loop": "Image.open(bytes), load(), convert('RGB'), resize((size, size)); one process",
        "bare_same_work": "the project's library calls (verify, hashes, one decode, quality measures, crop and resize, PNG) in a flat loop",
        "project_path": "map_chunks(inspect_images) then map_chunks(normalise_images) on kept images; default params",
        "cpu": "CPU seconds of this process plus its finished workers (RUSAGE_CHILDREN); wall ratios need idle cores",
    }


if __name__ == "__main__":
    raise SystemExit(main())
