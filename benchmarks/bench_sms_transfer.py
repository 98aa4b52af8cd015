"""Benchmark (quality): fine-tuned MiniLM against TF-IDF and the linear probe on grouped folds of SMS.

    .venv/bin/pipeline workspace overlays/real-data.yaml --dir build/real-data
    .venv/bin/python benchmarks/bench_sms_transfer.py --workspace build/real-data [--folds 5]

One test split of 505 messages (55 spam) moves macro-F1 by about 0.01 per misclassified spam, so
whether fine-tuning beats the classical baseline on that one split is largely the luck of the
split. This script asks the question over `--folds` grouped stratified folds of the same prepared
records instead: the union of the workspace's final train, val and test (duplicates already merged,
groups intact), cut by scikit-learn's StratifiedGroupKFold on `group_id`. Fold i is the test set,
fold i+1 the validation set that picks the epoch, the rest train. On each fold, with the
workspace's own `finetune.text` recipe (or it with `--recipe` overrides) and seed:

* finetune: `classifier_for` + `fit`, exactly what the finetune stage runs;
* tfidf: `tfidf_svm`, exactly what the baselines stage runs;
* linear_probe: `linear_probe` on the frozen MiniLM features, as the baselines stage;
* average: the mean of the fine-tuned model's and TF-IDF's spam probabilities (a hybrid, to see
  whether the transformer adds anything on top of character n-grams).

Beside macro-F1 at each method's own decision rule, each fold gives the ranking measures ROC-AUC
and average precision, and `best_threshold_f1`: macro-F1 at the threshold chosen on the test fold
itself, an upper bound that no decision rule fitted without the test labels can pass. Where the
model ranks better than TF-IDF but scores lower, its loss is in the operating point; where even
its upper bound is below TF-IDF's realised score, no threshold or calibration can close the gap.

Prints one JSON object: the scores per fold and method, their means and standard deviations, the
fine-tuned model's mean paired difference to each baseline and the folds on which it was not below.
Needs the workspace (its data comes from ../shared/datasets); says so and exits 2 without it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from measure import timed  # noqa: E402
from pipeline.io import read_records  # noqa: E402
from pipeline.model.baselines import linear_probe, tfidf_svm  # noqa: E402
from pipeline.model.models import classifier_for  # noqa: E402
from pipeline.model.scores import binary_roc_auc, macro_f1, softmax  # noqa: E402
from pipeline.model.train import fit, make_deterministic, predict_logits, recipe_for  # noqa: E402
from pipeline.params import load_params  # noqa: E402
from pipeline.seeding import derive_seed  # noqa: E402

METHODS = ("finetune", "tfidf", "linear_probe", "average")
MEASURES = ("macro_f1", "roc_auc", "average_precision", "best_threshold_f1")


def prepared_records(workspace: Path, dataset: str) -> pd.DataFrame:
    """The final train, val and test records of `dataset` in the workspace, as one frame."""
    final = workspace / "data" / dataset / "final"
    return pd.concat([read_records(final / f"{s}.parquet") for s in ("train", "val", "test")], ignore_index=True)


def fold_of(records: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Fold number per record: grouped (a group never straddles two folds) and stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed % 2**31)
    out = np.empty(len(records), dtype=np.int64)
    for k, (_, test) in enumerate(cv.split(records, records["label"], records["group_id"])):
        out[test] = k
    return out


def score_fold(records: pd.DataFrame, fold: np.ndarray, k: int, folds: int, section, seed: int, threads: int) -> dict:
    """The measures of every method in METHODS with fold k as test and fold k+1 as validation."""
    labels = sorted(set(records["label"]))
    y = np.array([labels.index(l) for l in records["label"]], dtype=np.int64)
    test, val = fold == k, fold == (k + 1) % folds
    train = ~(test | val)
    make_deterministic(seed, threads)
    model = classifier_for(section, labels)
    import torch

    inputs = {name: model.inputs(records[mask]) for name, mask in (("train", train), ("val", val), ("test", test))}
    targets = {name: torch.from_numpy(y[mask]) for name, mask in (("train", train), ("val", val))}
    (_, finetune_s, _) = timed(lambda: fit(model, (inputs["train"], targets["train"]), (inputs["val"], targets["val"]),
                                           n_classes=len(labels), recipe=recipe_for(section), seed=seed))
    probs = {"finetune": softmax(predict_logits(model, inputs["test"], 256))}
    texts = records["text"]
    probs["tfidf"] = tfidf_svm(texts[train], y[train], texts[test], n_classes=len(labels), seed=seed)
    frozen = classifier_for(section.model_copy(update={"strategy": "linear_probe"}), labels)
    features = {name: frozen.features(records[mask]).numpy() for name, mask in (("train", train), ("test", test))}
    probs["linear_probe"] = linear_probe(features["train"], y[train], features["test"], n_classes=len(labels), seed=seed)
    probs["average"] = (probs["finetune"] + probs["tfidf"]) / 2
    scores = {m: measures(y[test], probs[m]) for m in METHODS}
    return {"fold": k, "test_records": int(test.sum()), "finetune_seconds": round(finetune_s, 1), **scores}


def measures(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro-F1 at the method's own rule (argmax), ROC-AUC, average precision, best-threshold macro-F1."""
    from sklearn.metrics import average_precision_score

    spam = probs[:, 1]
    best = max(macro_f1(y, (spam >= t).astype(np.int64), 2) for t in np.unique(spam))
    return {"macro_f1": round(macro_f1(y, probs.argmax(axis=1), 2), 4), "roc_auc": round(binary_roc_auc(y, probs), 4),
            "average_precision": round(float(average_precision_score(y, spam)), 4), "best_threshold_f1": round(best, 4)}


def summary(rows: list[dict]) -> dict:
    """Mean and standard deviation per method and measure; the model's paired macro-F1 difference to each baseline."""
    out: dict = {m: {q: {"mean": round(statistics.mean(r[m][q] for r in rows), 4),
                         "stdev": round(statistics.stdev(r[m][q] for r in rows), 4) if len(rows) > 1 else 0.0}
                     for q in MEASURES} for m in METHODS}
    for base in METHODS[1:]:
        deltas = [r["finetune"]["macro_f1"] - r[base]["macro_f1"] for r in rows]
        out[f"finetune_minus_{base}"] = {"mean": round(statistics.mean(deltas), 4),
                                         "folds_not_below": sum(d >= 0 for d in deltas)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=ROOT / "build" / "real-data")
    parser.add_argument("--dataset", default="sms")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--recipe", type=json.loads, default={},
                        help='overrides of the workspace\'s finetune.text, as JSON, e.g. \'{"epochs": 3}\'')
    args = parser.parse_args()
    if not (args.workspace / "data" / args.dataset / "final").is_dir():
        print(f"no prepared {args.dataset!r} in {args.workspace}: run "
              "`.venv/bin/pipeline workspace overlays/real-data.yaml --dir build/real-data` first", file=sys.stderr)
        return 2
    params = load_params(args.workspace / "params.yaml")
    section = params.finetune.text.model_validate({**params.finetune.text.model_dump(), **args.recipe})
    seed = derive_seed(params.seed, "finetune", bits=32)
    records = prepared_records(args.workspace, args.dataset)
    if records["label"].nunique() != 2:
        print(f"{args.dataset!r} has {records['label'].nunique()} labels: the ranking measures here are for binary corpora",
              file=sys.stderr)
        return 2
    fold = fold_of(records, args.folds, seed)
    rows = [score_fold(records, fold, k, args.folds, section, seed, params.finetune.threads)
            for k in range(args.folds)]
    print(json.dumps({"dataset": args.dataset, "records": len(records), "folds": rows, "summary": summary(rows),
                      "recipe": section.model_dump(mode="json")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
