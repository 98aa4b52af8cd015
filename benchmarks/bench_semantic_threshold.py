"""Benchmark (calibration): a default cosine threshold for semantic near duplicates on the embed stage's vectors.

    .venv/bin/python benchmarks/bench_semantic_threshold.py [--seed 0] [--pairs 20000]

Real data from ../shared/datasets, embedded exactly as the embed stage does it
(`feature_extractor(FinetuneParams(device="cpu"), ...)` seeded like the stage, then
`model.features(frame)`): all-MiniLM-L6-v2 mean pooling for texts, EfficientNet-Lite0 pooling
for images. Vectors are L2-normalised, so a pair's cosine is a dot product.

SMS spam: every message normalised as the normalise stage does (`normalise_text`, default
`TextNormaliseParams`), then one record per distinct normalised text (the embed stage runs after
dedup, so identical texts never meet there; a duplicate's label is its first occurrence's, and
the corpus has no conflicting ones). Near pairs of two kinds:

* minhash: the pairs `near_duplicates` verifies at Jaccard >= 0.8 (`DedupParams().text`,
  certified: exact verification, the certificate's banding) among the distinct texts, so no
  pair is an exact duplicate;
* edited: `--text-copies` seeded messages of at least `--min-words` words, each copied with one
  word deleted and then one word swapped with its right neighbour (positions drawn per message
  from `rng(seed, ..., record index)`; words are whitespace-separated tokens, joined by one space).

Hymenoptera (train and val): every photo normalised as the normalise stage does
(`normalise_image`, default `ImageNormaliseParams`: 128 px centre crop, PNG), since that is what
the embed stage reads. The corpus has no near duplicates, so `--image-copies` seeded photos are
copied twice, from the original file (EXIF orientation applied), each copy then normalised too:

* reencoded: resized to 80% of each side (Lanczos) and saved as JPEG at quality 70;
* flipped: mirrored left to right and saved as PNG (lossless).

Random pairs: `--pairs` seeded pairs of distinct original records with the same label, drawn
uniformly over all such pairs, without repeats, minus the near pairs (all of them when fewer
exist). Prints per modality the cosine quantiles of each kind of pair, then for thresholds 0.80
to 0.99 the share of near pairs at or above it (recall, per kind and overall) and the share of
random pairs at or above it, and suggests the smallest threshold whose random-pair rate is at
most `--max-random-rate` (0.001). Deterministic for a seed (the model runs on the CPU with the
stage's pinned thread count); exits 2, saying what is missing, without the datasets.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from measure import timed  # noqa: E402
from pipeline.seeding import derive_seed, rng  # noqa: E402

NEAR_QUANTILES = (0.001, 0.01, 0.05, 0.5)
RANDOM_QUANTILES = (0.5, 0.95, 0.99, 0.999)
THRESHOLDS = tuple(round(t / 100, 2) for t in range(80, 100))
SMS = Path("sms_spam") / "SMSSpamCollection"
HYMENOPTERA = Path("hymenoptera")


@dataclass(slots=True)
class Calibration:
    """Cosines of one modality's near pairs (by kind) and random same-class pairs, and how they were made."""

    name: str
    notes: list[str] = field(default_factory=list)
    near: dict[str, np.ndarray] = field(default_factory=dict)
    random: np.ndarray = field(default_factory=lambda: np.zeros(0))


# --- embedding ------------------------------------------------------------------------------

def extractor(modality: str, classes: list[str], seed: int):
    """The embed stage's model for `modality`, on the CPU, seeded as the stage seeds it."""
    from pipeline.model.models import feature_extractor
    from pipeline.params import FinetuneParams

    return feature_extractor(FinetuneParams(device="cpu"), modality, classes, seed=derive_seed(seed, "embed", bits=32))


def unit_vectors(model, column: str, values: list) -> np.ndarray:
    """`model.features` of one frame of `values`, L2-normalised rows (float64)."""
    import pandas as pd

    frame = pd.DataFrame({"id": [f"r{i:06d}" for i in range(len(values))], "label": "", column: values})
    vectors = model.features(frame).numpy().astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def cosines(a: np.ndarray, b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine of each pair (row i of `a`, row j of `b`) of unit vectors."""
    return np.einsum("ij,ij->i", a[pairs[:, 0]], b[pairs[:, 1]]) if len(pairs) else np.zeros(0)


# --- pairs ----------------------------------------------------------------------------------

def random_pairs(labels: np.ndarray, count: int, exclude: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct pairs (i < j) with equal labels, uniform over all such pairs, none in
    `exclude` (pair codes i * n + j), in the order drawn."""
    n = len(labels)
    classes, sizes = np.unique(labels, return_counts=True)
    members = [np.flatnonzero(labels == c) for c in classes]
    weights = sizes * (sizes - 1) / 2
    excluded = int(np.sum(labels[exclude // n] == labels[exclude % n]))
    count = min(count, int(weights.sum()) - excluded)
    chosen = np.zeros(0, np.int64)
    while len(chosen) < count:
        which = gen.choice(len(classes), size=2 * (count - len(chosen)) + 64, p=weights / weights.sum())
        first = gen.integers(0, sizes[which])
        second = gen.integers(0, sizes[which] - 1)
        second += second >= first
        i = np.array([members[c][x] for c, x in zip(which, first)])
        j = np.array([members[c][x] for c, x in zip(which, second)])
        codes = np.concatenate([chosen, np.minimum(i, j) * n + np.maximum(i, j)])
        _, first_seen = np.unique(codes, return_index=True)
        codes = codes[np.sort(first_seen)]
        chosen = codes[~np.isin(codes, exclude)][:count]
    return np.stack([chosen // n, chosen % n], axis=1)


def pair_codes(pairs: np.ndarray, n: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1] if len(pairs) else np.zeros(0, np.int64)


# --- texts ----------------------------------------------------------------------------------

def sms_records(path: Path) -> tuple[list[str], list[str], int]:
    """(labels, texts) of the distinct normalised messages, first occurrences in file order, and the
    number of messages read."""
    from pipeline.params import TextNormaliseParams
    from pipeline.steps.normalise import normalise_text

    params = TextNormaliseParams()
    seen: dict[str, str] = {}
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    for number, line in enumerate(lines, start=2):
        label, tab, text = line.partition("\t")
        if not tab:
            raise SystemExit(f"{path}:{number}: no tab between label and text")
        text = normalise_text(text, params)
        if text.strip():
            seen.setdefault(text, label.strip().casefold())
    return list(seen.values()), list(seen), len(lines)


def edited_copy(text: str, gen: np.random.Generator) -> str:
    """`text` with one random word deleted, then one random word swapped with its right neighbour."""
    words = text.split()
    del words[gen.integers(len(words))]
    i = int(gen.integers(len(words) - 1))
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def text_calibration(path: Path, args: argparse.Namespace) -> Calibration:
    """SMS near pairs (MinHash-verified and edited copies) and random same-class pairs, as cosines."""
    from pipeline.params import DedupParams
    from pipeline.steps.neardup import NearDupSettings, near_duplicates

    labels, texts, read = sms_records(path)
    near = near_duplicates(texts, NearDupSettings.from_params(DedupParams().text, certify=True)).pairs
    eligible = np.flatnonzero([len(t.split()) >= args.min_words for t in texts])
    sources = np.sort(rng(args.seed, "bench_semantic", "sms", "sources").choice(
        eligible, size=min(args.text_copies, len(eligible)), replace=False))
    copies = [edited_copy(texts[i], rng(args.seed, "bench_semantic", "sms", "edit", int(i))) for i in sources]
    model = extractor("text", sorted(set(labels)), args.seed)
    (vectors, copied), seconds, _ = timed(lambda: (unit_vectors(model, "text", texts),
                                                   unit_vectors(model, "text", copies)))
    randoms = random_pairs(np.array(labels), args.pairs, pair_codes(near, len(texts)),
                           rng(args.seed, "bench_semantic", "sms", "random"))
    edited = np.stack([sources, np.arange(len(sources))], axis=1)
    notes = [f"{read:,} messages, {len(texts):,} distinct after normalise_text (all embedded, {vectors.shape[1]} dims, "
             f"{seconds:.1f} s with the copies)",
             f"minhash: {len(near)} pairs verified at Jaccard >= {DedupParams().text.threshold}; edited: {len(copies)} "
             f"copies of messages with >= {args.min_words} words ({len(eligible):,} eligible)"]
    return Calibration("sms_spam (all-MiniLM-L6-v2)", notes,
                       {"minhash": cosines(vectors, vectors, near), "edited": cosines(vectors, copied, edited)},
                       cosines(vectors, vectors, randoms))


# --- images ---------------------------------------------------------------------------------

def normalised(blob: bytes) -> bytes | None:
    """The normalise stage's image (default params), or None where it drops the image."""
    from pipeline.params import ImageNormaliseParams
    from pipeline.steps.normalise import normalise_image

    return normalise_image(blob, ImageNormaliseParams()).image


def oriented(blob: bytes):
    """The decoded photo, EXIF orientation applied, in RGB."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(blob)) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def reencoded(blob: bytes) -> bytes:
    """The photo at 80% of each side (Lanczos), saved as JPEG at quality 70."""
    from PIL import Image

    image = oriented(blob)
    size = (max(1, round(image.width * 0.8)), max(1, round(image.height * 0.8)))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def flipped(blob: bytes) -> bytes:
    """The photo mirrored left to right, saved as PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    oriented(blob).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def image_calibration(root: Path, args: argparse.Namespace) -> Calibration:
    """Hymenoptera planted near pairs (re-encoded and flipped copies) and random same-class pairs, as cosines."""
    files = sorted(p for p in root.glob("*/*/*") if p.is_file())
    blobs = [p.read_bytes() for p in files]
    kept = [i for i, b in enumerate(normalised(b) for b in blobs) if b is not None]
    files, blobs = [files[i] for i in kept], [blobs[i] for i in kept]
    labels = [p.parent.name for p in files]
    sources = np.sort(rng(args.seed, "bench_semantic", "hymenoptera", "sources").choice(
        len(files), size=min(args.image_copies, len(files)), replace=False))
    model = extractor("image", sorted(set(labels)), args.seed)

    def embed_all() -> tuple[np.ndarray, dict[str, np.ndarray]]:
        originals = unit_vectors(model, "image", [normalised(b) for b in blobs])
        return originals, {kind: unit_vectors(model, "image", [normalised(make(blobs[i])) for i in sources])
                           for kind, make in (("reencoded", reencoded), ("flipped", flipped))}

    (vectors, copies), seconds, _ = timed(embed_all)
    planted = np.stack([sources, np.arange(len(sources))], axis=1)
    randoms = random_pairs(np.array(labels), args.pairs, np.zeros(0, np.int64),
                           rng(args.seed, "bench_semantic", "hymenoptera", "random"))
    notes = [f"{len(files)} photos kept by normalise_image (train and val; all embedded, {vectors.shape[1]} dims, "
             f"{seconds:.1f} s with normalising the originals and the copies)",
             f"reencoded and flipped: copies of {len(sources)} photos"]
    return Calibration("hymenoptera (EfficientNet-Lite0)", notes,
                       {kind: cosines(vectors, copy, planted) for kind, copy in copies.items()},
                       cosines(vectors, vectors, randoms))


# --- report ---------------------------------------------------------------------------------

def quantile_tables(cal: Calibration) -> str:
    """Near pairs: low quantiles and the median; random pairs: the median, high quantiles and the maximum."""
    head = f"{'near pairs':<12} {'pairs':>6} " + " ".join(f"{'q' + format(q, 'g'):>7}" for q in NEAR_QUANTILES)
    lines = [head, "-" * len(head)]
    for kind, sims in cal.near.items():
        lines.append(f"{kind:<12} {len(sims):>6} " + " ".join(f"{v:>7.4f}" for v in np.quantile(sims, NEAR_QUANTILES)))
    head = f"{'random pairs':<12} {'pairs':>6} " + " ".join(f"{'q' + format(q, 'g'):>7}" for q in RANDOM_QUANTILES)
    head += f" {'max':>7}"
    values = [*np.quantile(cal.random, RANDOM_QUANTILES), cal.random.max()]
    row = f"{'same class':<12} {len(cal.random):>6} " + " ".join(f"{v:>7.4f}" for v in values)
    lines += ["", head, "-" * len(head), row]
    return "\n".join(lines)


def rates(cal: Calibration, threshold: float) -> tuple[dict[str, float], float]:
    """Recall per near kind and overall at `threshold`, and the random pairs' rate."""
    every = np.concatenate(list(cal.near.values()))
    recall = {kind: float(np.mean(sims >= threshold)) for kind, sims in {**cal.near, "all": every}.items()}
    return recall, float(np.mean(cal.random >= threshold))


def threshold_table(cal: Calibration) -> str:
    kinds = [*cal.near, "all"]
    head = f"{'threshold':>9} " + " ".join(f"{'recall ' + k:>16}" for k in kinds) + f" {'random rate':>12}"
    lines = [head, "-" * len(head)]
    for t in THRESHOLDS:
        recall, false = rates(cal, t)
        lines.append(f"{t:>9.2f} " + " ".join(f"{recall[k]:>16.4f}" for k in kinds) + f" {false:>12.5f}")
    return "\n".join(lines)


def suggestion(cal: Calibration, max_rate: float) -> str:
    """The smallest threshold of the grid whose random-pair rate is at most `max_rate`, and its recall."""
    for t in THRESHOLDS:
        recall, false = rates(cal, t)
        if false <= max_rate:
            shares = ", ".join(f"{k} {v:.4f}" for k, v in recall.items())
            edge = (f"\n   (the grid's lowest: a lower one may qualify too; q{1 - max_rate:g} of the random pairs is "
                    f"{np.quantile(cal.random, 1 - max_rate):.4f})" if t == THRESHOLDS[0] else "")
            return f"suggested threshold: {t:.2f} (random rate {false:.5f} <= {max_rate:g}; recall {shares}){edge}"
    grid = f"{THRESHOLDS[0]:.2f}..{THRESHOLDS[-1]:.2f}"
    return f"suggested threshold: none of {grid} keeps the random rate <= {max_rate:g}"


def report(cal: Calibration, max_rate: float) -> str:
    return "\n".join([f"== {cal.name}", *(f"   {n}" for n in cal.notes), "", quantile_tables(cal), "",
                      threshold_table(cal), "", suggestion(cal, max_rate), ""])


# --- command line ---------------------------------------------------------------------------

def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pairs", type=positive, default=20_000, help="random same-class pairs per modality")
    parser.add_argument("--text-copies", type=positive, default=300,
                        help="messages copied with a word deleted and two swapped")
    parser.add_argument("--min-words", type=int, default=5, help="words a message needs to be copied (at least 3)")
    parser.add_argument("--image-copies", type=positive, default=100, help="photos copied re-encoded and flipped")
    parser.add_argument("--max-random-rate", type=float, default=0.001,
                        help="random-pair rate the suggestion may reach")
    parser.add_argument("--modality", choices=["text", "image", "both"], default="both")
    args = parser.parse_args(argv)
    if args.min_words < 3:
        parser.error(f"--min-words must be at least 3 (one word is deleted, two swapped), got {args.min_words}")

    needed = {"text": args.data / SMS, "image": args.data / HYMENOPTERA}
    wanted = ["text", "image"] if args.modality == "both" else [args.modality]
    missing = [str(needed[m]) for m in wanted if not needed[m].exists()]
    if missing:
        print(f"missing dataset(s): {', '.join(missing)} (see ../shared/datasets/README.md; pass --data)",
              file=sys.stderr)
        return 2
    build = {"text": text_calibration, "image": image_calibration}
    for modality in wanted:
        print(report(build[modality](needed[modality], args), args.max_random_rate), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
