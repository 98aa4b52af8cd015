"""Label issues: records whose given label is probably wrong, found by confident learning.

Out-of-fold class probabilities come from a logistic regression on the embeddings of every record
(the embed stage's vectors of the semantic stage's records), trained on folds keyed by `group_id`,
so no record is predicted by a model that saw it, its near copies or its semantic neighbours;
`pipeline.steps.label_issues` then applies the rules of Northcutt et al. (2021). The issues table
this stage writes ranks them from the least likely given label up. What happens to them follows
`label_issues.policy` (or the dataset's own `datasets.<name>.label_issues` section, which replaces
the global one): `flag` keeps each, listed in the ledger (reason `label_issue`, detail: the
suggested label and the probability of the given one); `drop` removes each with that reason;
`relabel` gives a record the suggested label where its out-of-fold probability reaches
`relabel_confidence` (flagged `relabelled`, with both labels), and flags the rest. The record set
goes on to split with those changes, applied to each partition.
"""
from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.engines import open_engine
from pipeline.io import read_features, write_table
from pipeline.ledger import Fates
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.label_issues import find_label_issues, out_of_fold_probabilities, text_ngrams

log = logging.getLogger(__name__)
REASON, RELABELLED = "label_issue", "relabelled"
ISSUES = pa.schema([("rank", pa.int64()), ("id", pa.string()), ("given_label", pa.string()),
                    ("suggested_label", pa.string()), ("self_confidence", pa.float64()),
                    ("suggested_probability", pa.float64()), ("action", pa.string())])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from the semantic stage")
    parser.add_argument("--embeddings", required=True, type=Path, help="embeddings of those records (the embed stage)")
    parser.add_argument("--output", required=True, type=Path, help="issues table to write (Parquet)")
    parser.add_argument("--records", required=True, type=Path, help="record set to write, with the policy applied")


def run(ctx: Context) -> Outcome:
    engine = ctx.engine
    source = engine.read_records(ctx.args.input, modality=ctx.dataset.modality)
    columns = ["id", "label", "group_id", *(["text"] if _with_ngrams(ctx) else [])]
    records = engine.collect(engine.read_records(ctx.args.input, modality=ctx.dataset.modality, columns=columns))
    records = records.sort_values("id", kind="stable").reset_index(drop=True)
    params = settings(ctx)
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
        issues, extra["out_of_fold_accuracy"], extra["features"] = _issues(searched, ctx)
        issues = issues.assign(action=_actions(issues, params))
        _record_fates(ctx, issues)
        pairs = Counter(f"{g} -> {s}" for g, s in zip(issues["given_label"], issues["suggested_label"], strict=True))
        extra["label_issues"] = len(issues)
        extra["by_labels"] = dict(sorted(pairs.items()))
        extra["relabelled"] = int((issues["action"] == RELABELLED).sum())
    write_table(pa.Table.from_pandas(issues, schema=ISSUES, preserve_index=False), ctx.args.output)
    dropped = issues.loc[issues["action"] == "dropped", "id"]
    relabelled = issues[issues["action"] == RELABELLED]
    applied = engine.map(source, _applied, meta=source.frame._meta, dropped=frozenset(dropped),
                         labels=dict(zip(relabelled["id"], relabelled["suggested_label"], strict=True)))
    n_out = engine.write_records(applied, ctx.args.records)
    extra["labels"] = _labels_after(records, dropped, relabelled)
    return Outcome(len(records), n_out, extra)


def _labels_after(records: pd.DataFrame, dropped: pd.Series, relabelled: pd.DataFrame) -> dict[str, int]:
    """Records per label once the policy is applied."""
    labels = records.set_index("id")["label"].drop(index=dropped)
    labels.loc[relabelled["id"]] = relabelled["suggested_label"].to_numpy(object)
    return {str(k): int(v) for k, v in labels.value_counts().sort_index().items()}


def _actions(issues: pd.DataFrame, params) -> np.ndarray:
    """What the policy does to each issue: flagged, dropped or relabelled."""
    if params.policy == "drop":
        return np.full(len(issues), "dropped", dtype=object)
    sure = issues["suggested_probability"].to_numpy(float) >= params.relabel_confidence
    return np.where(sure & (params.policy == "relabel"), RELABELLED, "flagged").astype(object)


def _record_fates(ctx: Context, issues: pd.DataFrame) -> None:
    """The ledger rows of the issues: dropped or flagged `label_issue`, or flagged `relabelled`."""
    details = np.array([f"given {g}, suggested {s}; probability of the given label {p:.3f}, of the suggested {q:.3f}"
                        for g, s, p, q in zip(issues["given_label"], issues["suggested_label"], issues["self_confidence"],
                                              issues["suggested_probability"], strict=True)], dtype=object)
    for action, fates in (("dropped", Fates.dropped), ("flagged", Fates.flagged)):
        chosen = (issues["action"] == action).to_numpy()
        ctx.ledger.record(fates(issues.loc[chosen, "id"], REASON, details[chosen]))
    chosen = (issues["action"] == RELABELLED).to_numpy()
    ctx.ledger.record(Fates.flagged(issues.loc[chosen, "id"], RELABELLED, details[chosen]))


def _applied(records: pd.DataFrame, dropped: frozenset[str], labels: dict[str, str]) -> pd.DataFrame:
    """The records not `dropped`, relabelled where `labels` says."""
    kept = records[~records["id"].isin(dropped)]
    return kept.assign(label=np.array([labels.get(i, l) for i, l in zip(kept["id"], kept["label"], strict=True)], dtype=object))


def _why_not(records: pd.DataFrame, ctx: Context) -> str | None:
    """Why the search cannot run on these records (None: it can)."""
    params = settings(ctx)
    if params.policy == "off":
        return "policy off"
    if ctx.dataset.multi_label:
        return "multi-label records (confident learning here takes one label per record)"
    if records["label"].nunique() < 2:
        return f"fewer than two classes of at least {params.folds} records (label_issues.folds)"
    if records["group_id"].nunique() < params.folds:
        return f"fewer groups than label_issues.folds ({params.folds})"
    return None


def _issues(records: pd.DataFrame, ctx: Context) -> tuple[pd.DataFrame, float, str]:
    """The issues table, ranked, how often the out-of-fold prediction agrees with the given label,
    and what the model read."""
    params = settings(ctx)
    classes = sorted(records["label"].unique())
    probabilities, read = _probabilities(records, ctx, read_features(ctx.args.embeddings, records["id"])), "embeddings"
    if _with_ngrams(ctx) and (ngrams := text_ngrams(records["text"])) is not None:
        probabilities = (probabilities + _probabilities(records, ctx, ngrams)) / 2
        read = "embeddings and character n-grams (averaged)"
    labels = records["label"].to_numpy(object)
    agreement = float((probabilities.argmax(axis=1) == pd.Categorical(labels, categories=classes).codes).mean())
    found = find_label_issues(labels, probabilities, classes=classes)
    issues = pd.DataFrame({
        "rank": range(1, len(found) + 1),
        "id": records["id"].to_numpy(object)[found["position"].to_numpy()],
        "given_label": found["given_label"].astype(str).to_numpy(object),
        "suggested_label": found["suggested_label"].astype(str).to_numpy(object),
        "self_confidence": found["self_confidence"].to_numpy(float).round(6),
        "suggested_probability": probabilities[found["position"].to_numpy(), _codes(found["suggested_label"], classes)].round(6),
    })
    return issues, round(agreement, 6), read


def settings(ctx: Context):
    """This dataset's label_issues section (`datasets.<name>.label_issues`), else the global one."""
    return ctx.dataset.label_issues or ctx.params.label_issues


def _with_ngrams(ctx: Context) -> bool:
    return ctx.dataset.modality == "text" and settings(ctx).text_ngrams


def _probabilities(records: pd.DataFrame, ctx: Context, features) -> np.ndarray:
    """Out-of-fold class probabilities of the records from `features` (rows in their order)."""
    params = settings(ctx)
    return out_of_fold_probabilities(features, records["label"].to_numpy(object), records["group_id"].to_numpy(object),
                                     folds=params.folds, seed=derive_seed(ctx.params.seed, "label_issues", bits=32),
                                     C=params.inverse_regularisation)


def _codes(labels: pd.Series, classes: list[str]) -> np.ndarray:
    column = {label: k for k, label in enumerate(classes)}
    return np.array([column[label] for label in labels], dtype=np.int64)


def main(argv: list[str] | None = None) -> int:
    return stage_main("label_issues", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
