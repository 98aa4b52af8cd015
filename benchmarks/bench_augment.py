"""Benchmark: the augment step against bare albumentations and bare nlpaug loops, same inputs.

    .venv/bin/python benchmarks/bench_augment.py [--image-repeat 2] [--text-repeat 2] [--rounds 3]

Inputs, prepared before any timing:

* images: the 398 hymenoptera files from ../shared/datasets (or 400 generated JPEGs where absent)
  passed through `normalise_images` with the default params, so they are what augment reads in
  the pipeline: 128 x 128 RGB PNGs;
* texts: the 5,574 SMS Spam Collection messages from ../shared/datasets (or 5,000 generated
  sentences where absent).

In one run, each round times (1 variant per record, default params from `pipeline.params`):

* bare albumentations: `A.from_dict(<the default augment.image.transform>)`, seeded once with
  `set_random_seed`, then per image: PIL open of the PNG bytes, `convert("RGB")`, `np.asarray`,
  `compose(image=...)`, PIL `fromarray` and PNG encode at compress_level 6. That is the step's
  decode, transform and encode; the step also seeds every transform per (record, variant),
  records the sampled parameters (`save_applied_params`) as JSON, and hashes the pixels.
* bare nlpaug: the default augmenters built from the same arguments, global RNGs seeded once,
  then `augment(text)` per text. The step also seeds the global RNGs per (record, variant),
  hashes the text and writes the operation as JSON.
* project: `map_chunks(augment_images | augment_texts)` with the stage's chunk size
  (`chunk_size_for`: `engine.chunk_size // 8` images, `engine.chunk_size` texts), with 1 and
  with 2 workers; the 2-worker output must equal the 1-worker output.

Rounds are interleaved (bare, 1 worker, 2 workers) so a change in machine load hits all three;
the ratios use the median wall seconds over the rounds. Since the machine may be shared, the load
average is reported, and so is each path's CPU time (this process plus its finished workers): a
2-worker wall-clock speedup needs two idle cores. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import os
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from pipeline.engines import chunk_size_for, map_chunks  # noqa: E402
from pipeline.params import EngineParams, ImageAugmentParams, ImageNormaliseParams, TextAugmentParams  # noqa: E402
from pipeline.records import make_id  # noqa: E402
from pipeline.steps.augment import augment_images, augment_texts  # noqa: E402
from pipeline.steps.normalise import normalise_images  # noqa: E402
from measure import timed  # noqa: E402

SHARED = ROOT.parent / "shared" / "datasets"
SEED = 42
TARGETS = {"project_1w_over_bare": 0.8, "project_2w_over_project_1w": 1.8}


# --- inputs ---------------------------------------------------------------------------------

def load_images(folder: Path) -> tuple[list[bytes], str]:
    """Normalised PNGs (default normalise params) of the hymenoptera files, or of generated JPEGs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_image_ingest import load_files

    files, what = load_files(folder)
    normalised = normalise_images(files, ImageNormaliseParams())
    return [n.image for n in normalised], f"{what}, normalised to {ImageNormaliseParams().size} px PNG"


def load_texts(path: Path) -> tuple[list[str], str]:
    """SMS messages (the text column), or generated sentences where the corpus is absent."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
        texts = [line.split("\t", 1)[1] for line in lines if "\t" in line]
        return texts, f"sms_spam: {len(texts)} messages"
    gen = np.random.default_rng(0)
    words = "invoice parcel refund courier depot charge account delivery monday card address label order".split()
    texts = [" ".join(gen.choice(words, int(gen.integers(6, 20)))) for _ in range(5000)]
    return texts, "generated: 5000 sentences (sms_spam absent)"


# --- the paths compared ---------------------------------------------------------------------

def bare_albumentations(blobs: list[bytes], transform: dict) -> int:
    """Decode, transform and encode each image with one Compose seeded once."""
    import albumentations as A

    compose = A.from_dict(transform)
    compose.set_random_seed(SEED)
    total = 0
    for data in blobs:
        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
        out = compose(image=pixels)["image"]
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="PNG", compress_level=6)
        total += len(buffer.getvalue())
    return total


def bare_nlpaug(texts: list[str], params: TextAugmentParams) -> int:
    """Every augmenter in order on each text, global RNGs seeded once."""
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw

    augmenters = [getattr(nac if a.name in ("KeyboardAug", "OcrAug", "RandomCharAug") else naw, a.name)(**a.args)
                  for a in params.augmenters]
    random.seed(SEED)
    np.random.seed(SEED)
    total = 0
    for text in texts:
        for augmenter in augmenters:
            result = augmenter.augment(text)
            text = result[0] if isinstance(result, list) else result
        total += len(text)
    return total


def project(fn: Callable, items: list[tuple], workers: int, modality: str) -> list:
    chunk = chunk_size_for(modality, EngineParams().chunk_size)  # what the augment stage uses
    return map_chunks(fn, items, workers=workers, chunk_size=chunk)


def compare(name: str, bare: Callable[[], Any], step: Callable, items: list[tuple], rounds: int) -> dict[str, Any]:
    modality = "image" if name == "images" else "text"
    """Interleaved rounds of bare, project 1 worker, project 2 workers; throughput, ratios, CPU."""
    step(items[:4])  # warm: imports, cached Compose or augmenters
    paths = {"bare": bare, "project_1w": lambda: project(step, items, 1, modality),
             "project_2w": lambda: project(step, items, 2, modality)}
    wall: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    out: dict[str, Any] = {}
    for _ in range(rounds):
        for path, fn in paths.items():
            out[path], w, c = timed(fn)
            wall[path].append(w)
            cpu[path].append(c)
        if out["project_1w"] != out["project_2w"]:
            raise SystemExit(f"{name}: project output with 2 workers differs from 1 worker")
    median = {k: statistics.median(v) for k, v in wall.items()}
    cpu_median = {k: statistics.median(v) for k, v in cpu.items()}
    ratios = {"project_1w_over_bare": median["bare"] / median["project_1w"],
              "project_2w_over_project_1w": median["project_1w"] / median["project_2w"]}
    return {
        "records": len(items), "variants": len(out["project_1w"]), "chunk_size": chunk_size_for(modality, EngineParams().chunk_size),
        "per_s": {k: round(len(items) / s, 1) for k, s in median.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratios_per_round": [{"project_1w_over_bare": round(b / p1, 3), "project_2w_over_project_1w": round(p1 / p2, 3)}
                             for b, p1, p2 in zip(wall["bare"], wall["project_1w"], wall["project_2w"])],
        "targets": {k: {"target": f">= {TARGETS[k]}", "holds": round(v, 3) >= TARGETS[k]} for k, v in ratios.items()},
        "cpu_s": {k: round(v, 2) for k, v in cpu_median.items()},
        "cpu_ratios": {"project_1w_over_bare": round(cpu_median["bare"] / cpu_median["project_1w"], 3),
                       "project_2w_cpu_over_1w_cpu": round(cpu_median["project_2w"] / cpu_median["project_1w"], 3)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-repeat", type=int, default=2, help="times the image list is repeated (default 2)")
    parser.add_argument("--text-repeat", type=int, default=2, help="times the text list is repeated (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; ratios use the medians (default 3)")
    parser.add_argument("--only", choices=["images", "texts"], help="run one modality")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    report: dict[str, Any] = {"cpus": os.cpu_count(), "rounds": args.rounds}
    if args.only != "texts":
        blobs, what = load_images(SHARED / "hymenoptera")
        blobs = blobs * args.image_repeat
        params = ImageAugmentParams()
        items = [(make_id("bench", i), data, 1) for i, data in enumerate(blobs)]
        report["images"] = {"inputs": what, "repeat": args.image_repeat, **compare(
            "images", lambda: bare_albumentations(blobs, params.transform),
            functools.partial(augment_images, params=params, seed=SEED), items, args.rounds)}
    if args.only != "images":
        texts, what = load_texts(SHARED / "sms_spam" / "SMSSpamCollection")
        texts = texts * args.text_repeat
        params = TextAugmentParams()
        items = [(make_id("bench", i), text, 1) for i, text in enumerate(texts)]
        report["texts"] = {"inputs": what, "repeat": args.text_repeat,
                           "augmenters": [a.model_dump() for a in params.augmenters], **compare(
            "texts", lambda: bare_nlpaug(texts, params), functools.partial(augment_texts, params=params, seed=SEED),
            items, args.rounds)}
    report["load_avg_1_5_15_before"] = [round(v, 2) for v in load_before]
    report["load_avg_1_5_15_after"] = [round(v, 2) for v in os.getloadavg()]
    report["bare_albumentations"] = ("A.from_dict(same dict), set_random_seed once; per image: PIL open PNG, convert RGB, "
                                     "np.asarray, compose(image=), fromarray, PNG compress_level 6")
    report["bare_nlpaug"] = "same augmenters and args, random/np.random seeded once; per text: augment(text)"
    report["cpu"] = "CPU seconds of this process plus its finished workers (RUSAGE_CHILDREN)"
    report["project"] = ("map_chunks(augment_images | augment_texts), the stage's chunk size; per variant also "
                         "seeds per (record, variant), records applied params / op JSON, hashes content")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
