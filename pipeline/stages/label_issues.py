"""Label issues: records whose given label is probably wrong, found by confident learning.

Out-of-fold class probabilities come from a logistic regression on the embeddings of every record
after dedup (the embed stage), trained on folds keyed by `group_id`, so no record is predicted by
a model that saw it or its near copies; `pipeline.steps.label_issues` then applies the rules of
Northcutt et al. (2021). With policy `flag` each record found stays, listed in the ledger (reason
`label_issue`, detail: the suggested label and the probability of the given one) and in the
issues table this stage writes, ranked from the least likely label up.
"""
from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.io import read_features, record_chunks, write_table
from pipeline.ledger import Fates
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.label_issues import find_label_issues, out_of_fold_probabilities

log = logging.getLogger(__name__)
REASON = "label_issue"
ISSUES = pa.schema([("rank", pa.int64()), ("id", pa.string()), ("given_label", pa.string()),
                    ("suggested_label", pa.string()), ("self_confidence", pa.float64())])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from dedup")
    parser.add_argument("--embeddings", required=True, type=Path, help="embeddings of those records (the embed stage)")
    parser.add_argument("--output", required=True, type=Path, help="issues table to write (Parquet)")


def run(ctx: Context) -> Outcome:
    records = pd.concat(list(record_chunks(ctx.args.input, ["id", "label", "group_id"])), ignore_index=True)
    params = ctx.params.label_issues
    counts = records["label"].value_counts()
    too_small = sorted(str(label) for label, n in counts.items() if n < params.folds)
    searched = records[~records["label"].isin(too_small)].reset_index(drop=True)
    why_not = _why_not(searched, ctx)
    issues = pd.DataFrame(columns=ISSUES.names)
    extra: dict = {"policy": params.policy, "folds": params.folds}
    if too_small:
        extra["classes_left_out"] = too_small  # fewer records than folds: their out-of-fold predictions mean nothing
    if why_not:
        log.warning("label issues of %s not searched: %s", ctx.name, why_not)
        extra["not_searched"] = why_not
    else:
        issues, extra["out_of_fold_accuracy"] = _issues(searched, ctx)
        ctx.ledger.record(Fates.flagged(issues["id"], REASON, [
            f"given {g}, suggested {s}; probability of the given label {p:.3f}"
            for g, s, p in zip(issues["given_label"], issues["suggested_label"], issues["self_confidence"], strict=True)]))
        pairs = Counter(f"{g} -> {s}" for g, s in zip(issues["given_label"], issues["suggested_label"], strict=True))
        extra["label_issues"] = len(issues)
        extra["by_labels"] = dict(sorted(pairs.items()))
    write_table(pa.Table.from_pandas(issues, schema=ISSUES, preserve_index=False), ctx.args.output)
    return Outcome(len(records), len(records), extra)


def _why_not(records: pd.DataFrame, ctx: Context) -> str | None:
    """Why the search cannot run on these records (None: it can)."""
    params = ctx.params.label_issues
    if params.policy == "off":
        return "policy off"
    if ctx.dataset.multi_label:
        return "multi-label records (confident learning here takes one label per record)"
    if records["label"].nunique() < 2:
        return f"fewer than two classes of at least {params.folds} records (label_issues.folds)"
    if records["group_id"].nunique() < params.folds:
        return f"fewer groups than label_issues.folds ({params.folds})"
    return None


def _issues(records: pd.DataFrame, ctx: Context) -> tuple[pd.DataFrame, float]:
    """The issues table, ranked, and how often the out-of-fold prediction agrees with the given label."""
    params = ctx.params.label_issues
    features = read_features(ctx.args.embeddings, records["id"])
    classes = sorted(records["label"].unique())
    probabilities = out_of_fold_probabilities(features, records["label"].to_numpy(object), records["group_id"].to_numpy(object),
                                              folds=params.folds, seed=derive_seed(ctx.params.seed, "label_issues", bits=32),
                                              C=params.inverse_regularisation)
    labels = records["label"].to_numpy(object)
    agreement = float((probabilities.argmax(axis=1) == pd.Categorical(labels, categories=classes).codes).mean())
    found = find_label_issues(labels, probabilities, classes=classes)
    issues = pd.DataFrame({
        "rank": range(1, len(found) + 1),
        "id": records["id"].to_numpy(object)[found["position"].to_numpy()],
        "given_label": found["given_label"].astype(str).to_numpy(object),
        "suggested_label": found["suggested_label"].astype(str).to_numpy(object),
        "self_confidence": found["self_confidence"].to_numpy(float).round(6),
    })
    return issues, round(agreement, 6)


def main(argv: list[str] | None = None) -> int:
    return stage_main("label_issues", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
