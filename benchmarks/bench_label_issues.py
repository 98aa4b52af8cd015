"""Benchmark (quality): our confident-learning label-issue finder against cleanlab's, on planted flips.

    .venv/bin/pip install --no-deps --target ../bench-libs cleanlab termcolor   # once, outside the repo
    .venv/bin/python benchmarks/bench_label_issues.py --cleanlab-path ../bench-libs [--repeats 3] [--no-images]
        [--text-features ngrams|embeddings|both]

cleanlab is AGPL and not a project dependency: it is imported from `--cleanlab-path` (or the
`CLEANLAB_PATH` environment variable, or wherever Python finds it) and only here.

Real data from ../shared/datasets, labels made noisy by seeded flips of `--rate` (5%) of the
records, in three settings:

* symmetric: that share of every class, each moved to another class at random;
* one_way: that share of all records, all taken from the first class (ham, ants) to the second;
* class_dependent: the second class (spam, bees) flipped at 3 times the first's rate, the total
  still `--rate` of the records.

Corpora: SMS spam (TF-IDF character 2-5-grams within word boundaries, sublinear, min_df 2, as the
label_issues stage computes them (`text_ngrams`); with `--text-features embeddings` the embed
stage's MiniLM mean-pooled vectors instead, with `both` the two models' out-of-fold probabilities
averaged, as the stage does with `label_issues.text_ngrams`; groups are texts equal after
whitespace folding and case folding, so duplicates share a fold) and, unless
`--no-images`, hymenoptera (train and val together, 398 images embedded by the project's frozen
EfficientNet-Lite0 pooled features, exactly what the features stage computes; nothing downloaded).

For each setting and repeat (`--repeats` noise draws, keyed on the corpus, not on its features, so
the three `--text-features` see the same flips), `out_of_fold_probabilities` gives one set of
probabilities, and both finders read the same ones: ours (`find_label_issues`, prune by noise
rate) and `cleanlab.filter.find_label_issues(labels, pred_probs)` with its defaults. Each flagged
set is scored against the planted flips (precision, recall, F1; the corpora's own label errors,
such as hymenoptera's `imageNotFound.gif`, count as false positives for both), averaged over the
repeats. Prints one table and the ratio F1(ours) / F1(cleanlab) per row.

On hymenoptera the linear model itself is the limit (out-of-fold accuracy 0.90 on the clean
labels, so about 40 records it disagrees with before any flip): precision stays low for both
finders; a stronger regularisation (`--C 0.001`) gives calibrated probabilities and F1 0.56
instead of 0.42 on symmetric noise, for both alike.

Measured while writing the finder: following the paper to the letter (flag the n * Q[i][j]
records of largest margin p_j - p_i, whatever its sign) flagged 19 extra records on SMS,
symmetric, seed 3, 16 of them correct labels the model agreed with (F1 0.905 against cleanlab's
0.925); flagging only records of positive margin closed the gap. Exits 2, saying what is missing,
without the SMS corpus or cleanlab.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from measure import timed  # noqa: E402
from pipeline.seeding import derive_seed, rng  # noqa: E402
from pipeline.steps.label_issues import find_label_issues, out_of_fold_probabilities, text_ngrams  # noqa: E402

SETTINGS = ("symmetric", "one_way", "class_dependent")
DEPENDENT_FACTOR = 3.0  # class_dependent: the second class's flip rate over the first's
INSTALL = ("cleanlab is not installed (AGPL: only this benchmark uses it, never the project). Install it outside "
           "the repository:\n  .venv/bin/pip install --no-deps --target ../bench-libs cleanlab termcolor\n"
           "then pass --cleanlab-path ../bench-libs or set CLEANLAB_PATH=../bench-libs")


@dataclass(slots=True)
class Corpus:
    """Features (one matrix per model whose probabilities are averaged), integer labels (codes into
    `classes`) and group ids of one dataset."""

    name: str
    features: list
    labels: np.ndarray
    groups: np.ndarray
    classes: list[str]


# --- data -----------------------------------------------------------------------------------

def sms_corpus(path: Path, features: str, seed: int) -> Corpus:
    """SMS spam (`label<TAB>text` after one header line) as TF-IDF character n-grams, embeddings or both."""
    labels, texts = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()[1:], start=2):
        label, tab, text = line.partition("\t")
        if not tab:
            raise SystemExit(f"{path}:{number}: no tab between label and text")
        labels.append(label.strip().casefold())
        texts.append(text)
    classes = sorted(set(labels))
    views = ([text_ngrams(texts)] if features in ("ngrams", "both") else []) + \
        ([text_embeddings(texts, classes, seed)] if features in ("embeddings", "both") else [])
    groups = np.array([re.sub(r"\s+", " ", t).strip().casefold() for t in texts], dtype=object)
    return Corpus(f"sms_spam/{features}", views, np.array([classes.index(l) for l in labels]), groups, classes)


def text_embeddings(texts: list[str], classes: list[str], seed: int) -> np.ndarray:
    """The embed stage's vectors of `texts` (MiniLM mean pooling, its chunks of 8,192 texts)."""
    import pandas as pd

    from pipeline.model.embedding import CHUNK_ROWS
    from pipeline.model.models import feature_extractor
    from pipeline.params import FinetuneParams

    model = feature_extractor(FinetuneParams(device="cpu"), "text", classes, seed=derive_seed(seed, "embed", bits=32))
    frame = pd.DataFrame({"text": texts})
    return np.concatenate([model.features(frame.iloc[i:i + CHUNK_ROWS]).numpy() for i in range(0, len(texts), CHUNK_ROWS)])


def hymenoptera_corpus(root: Path, seed: int) -> Corpus:
    """Every image of train/ and val/ as the frozen EfficientNet-Lite0 features the features stage computes."""
    import pandas as pd

    from pipeline.model.models import feature_extractor
    from pipeline.params import FinetuneParams

    files = sorted(p for p in root.glob("*/*/*") if p.is_file())
    classes = sorted({p.parent.name for p in files})
    seed = derive_seed(seed, "features", bits=32)
    model = feature_extractor(FinetuneParams(device="cpu"), "image", classes, seed=seed)
    frame = pd.DataFrame({"image": [p.read_bytes() for p in files]})
    features = model.features(frame).numpy().astype(np.float64)
    groups = np.array([p.relative_to(root).as_posix() for p in files], dtype=object)
    return Corpus("hymenoptera", [features], np.array([classes.index(p.parent.name) for p in files]), groups, classes)


# --- noise ----------------------------------------------------------------------------------

def planted_noise(labels: np.ndarray, setting: str, rate: float, gen: np.random.Generator) -> np.ndarray:
    """Noisy labels: `labels` with a seeded share flipped as `setting` says (see the module doc)."""
    members = [np.flatnonzero(labels == c) for c in range(labels.max() + 1)]
    if setting == "symmetric":
        counts = [round(rate * len(m)) for m in members]
    elif setting == "one_way":
        counts = [round(rate * len(labels))] + [0] * (len(members) - 1)
    else:
        first = rate * len(labels) / (len(members[0]) + DEPENDENT_FACTOR * sum(len(m) for m in members[1:]))
        counts = [round(first * len(members[0]))] + [round(DEPENDENT_FACTOR * first * len(m)) for m in members[1:]]
    noisy = labels.copy()
    for c, (m, count) in enumerate(zip(members, counts)):
        chosen = gen.choice(m, size=min(count, len(m)), replace=False)
        targets = [1] * len(chosen) if setting == "one_way" else gen.integers(1, len(members), len(chosen))
        noisy[chosen] = (c + np.asarray(targets)) % len(members)
    return noisy


# --- scoring --------------------------------------------------------------------------------

def scores(flagged: np.ndarray, planted: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of the flagged positions against the planted flips (a mask)."""
    hits = int(planted[flagged].sum())
    precision = hits / len(flagged) if len(flagged) else 0.0
    recall = hits / int(planted.sum()) if planted.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"flagged": len(flagged), "precision": precision, "recall": recall, "f1": f1}


def run_setting(corpus: Corpus, setting: str, args: argparse.Namespace, cleanlab_find: Callable) -> dict:
    """Both finders on `args.repeats` noise draws of one setting: mean scores and seconds."""
    rows: dict[str, list[dict]] = {"ours": [], "cleanlab": []}
    flips, seconds = [], []
    for repeat in range(args.repeats):
        noisy = planted_noise(corpus.labels, setting, args.rate, rng(args.seed, "bench", corpus.name.split("/")[0], setting, repeat))
        planted = noisy != corpus.labels
        probs, wall, _ = timed(lambda: np.mean([out_of_fold_probabilities(view, noisy, corpus.groups, folds=args.folds,
                                                                          seed=args.seed, C=args.C) for view in corpus.features], axis=0))
        flips.append(int(planted.sum()))
        seconds.append(wall)
        rows["ours"].append(scores(find_label_issues(noisy, probs)["position"].to_numpy(), planted))
        rows["cleanlab"].append(scores(np.flatnonzero(cleanlab_find(labels=noisy, pred_probs=probs)), planted))
    mean = {m: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for m, rs in rows.items()}
    return {"dataset": corpus.name, "setting": setting, "flips": float(np.mean(flips)),
            "oof_seconds": float(np.mean(seconds)), **mean}


def table(results: list[dict]) -> str:
    """The results as a fixed-width table, one row per dataset and setting."""
    head = (f"{'dataset':<20} {'noise':<16} {'flips':>6} {'oof_s':>6} | {'ours':>6} {'P':>6} {'R':>6} {'F1':>6} | "
            f"{'clean':>6} {'P':>6} {'R':>6} {'F1':>6} | {'F1 ratio':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        o, c = r["ours"], r["cleanlab"]
        ratio = o["f1"] / c["f1"] if c["f1"] else float("nan")
        lines.append(f"{r['dataset']:<20} {r['setting']:<16} {r['flips']:>6.1f} {r['oof_seconds']:>6.1f} | "
                     f"{o['flagged']:>6.1f} {o['precision']:>6.3f} {o['recall']:>6.3f} {o['f1']:>6.3f} | "
                     f"{c['flagged']:>6.1f} {c['precision']:>6.3f} {c['recall']:>6.3f} {c['f1']:>6.3f} | {ratio:>8.3f}")
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------

def load_cleanlab(path: str | None) -> Callable | None:
    """`cleanlab.filter.find_label_issues`, imported from `path` first; None where it is not installed."""
    if path:
        sys.path.insert(0, path)
    try:
        return importlib.import_module("cleanlab.filter").find_label_issues
    except ImportError as error:
        print(f"{error}\n{INSTALL}", file=sys.stderr)
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--cleanlab-path", default=os.environ.get("CLEANLAB_PATH"),
                        help="folder cleanlab was installed into with pip --target (default: $CLEANLAB_PATH)")
    parser.add_argument("--rate", type=float, default=0.05, help="share of records whose label is flipped")
    parser.add_argument("--repeats", type=int, default=3, help="noise draws per setting (scores are their mean)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the logistic regressions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-images", action="store_true", help="skip hymenoptera (embedding takes a minute on CPU)")
    parser.add_argument("--text-features", choices=("ngrams", "embeddings", "both"), default="ngrams",
                        help="SMS as TF-IDF n-grams, the embed stage's vectors, or both models averaged (the stage's default)")
    args = parser.parse_args()
    sms = args.data / "sms_spam" / "SMSSpamCollection"
    if not sms.is_file():
        print(f"no SMS spam corpus at {sms}: this benchmark reads ../shared/datasets (or --data)", file=sys.stderr)
        return 2
    cleanlab_find = load_cleanlab(args.cleanlab_path)
    if cleanlab_find is None:
        return 2
    corpora = [sms_corpus(sms, args.text_features, args.seed)]
    images = args.data / "hymenoptera"
    if args.no_images:
        pass
    elif images.is_dir():
        corpora.append(hymenoptera_corpus(images, args.seed))
    else:
        print(f"no hymenoptera images at {images}: skipping them", file=sys.stderr)
    results = [run_setting(corpus, setting, args, cleanlab_find) for corpus in corpora for setting in SETTINGS]
    print(f"rate={args.rate} repeats={args.repeats} folds={args.folds} C={args.C} seed={args.seed} "
          f"(flagged, P, R, F1: means over the repeats; oof_s: seconds for out_of_fold_probabilities)")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
