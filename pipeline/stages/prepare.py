"""Prepare: the metadata columns made ready for a model, every statistic fitted on train alone.

Runs after split and before augment, so nothing generated later can weigh on a statistic, and
every drop happens before a record is copied. Fitting is an aggregation: each train partition
counts its parsed values (`pipeline.steps.metadata.partial_rows`), the engine sums the counts, and
`fit` reads every statistic off the sums in sorted order, so any partitioning gives the same bytes.
The fitted statistics (`fitted.json`: what a served model needs to prepare its inputs as training
did) are applied to train, val and test partition by partition: records whose value is missing
(`missing: drop`), outside the train bounds (`outliers: drop`) or unparseable are dropped with the
reason `missing:<column>`, `outlier:<column>` or `unparseable:<column>`; the others go on
unchanged, and their prepared features (`id` and one column per feature) are written per split;
`datasets.<name>.feature_selection` keeps the features that vary enough on train and, of those, the
most informative about the label (scores in `selection.json`). Without metadata columns the record
sets pass through unchanged.
"""
from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.engines import Engine, Partitioned, open_engine
from pipeline.io import record_count, write_bytes, write_table
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.seeding import derive_seed
from pipeline.steps.metadata import (PARTIAL_COLUMNS, Fitted, feature_names, fit, partial_from_rows, partial_rows, prepare_records,
                                     record_features, select_features, spec_of, to_json)

SPLITS = ("train", "val", "test")
PARTIAL = pa.schema([("column", pa.string()), ("what", pa.string()), ("number", pa.float64()), ("category", pa.string()),
                     ("n", pa.int64())])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of train/val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="folder for the prepared train/val/test record sets")
    parser.add_argument("--features", required=True, type=Path, help="folder for fitted.json and train/val/test features")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    specs = [spec_of(name, column) for name, column in sorted(ctx.dataset.metadata.items())]
    splits = {s: engine.read_records(ctx.args.input / f"{s}.parquet", modality=modality) for s in SPLITS}
    fitted = _fitted(engine, splits["train"], specs)
    write_bytes(to_json(fitted).encode("utf-8"), ctx.args.features / "fitted.json")
    counts, n_out, features = Counter(), 0, {}
    for name, records in splits.items():
        kept, fates, counted = engine.process(records, functools.partial(prepare_records, fitted=fitted))
        ctx.ledger.record_spills(fates)
        counts.update(counted)
        n_out += engine.write_records(kept, ctx.args.output / f"{name}.parquet")
        written = engine.read_records(ctx.args.output / f"{name}.parquet", modality=modality, columns=["id", "metadata"])
        features[name] = _features(engine, written, fitted)  # the columns apply reads, not the records' content
    chosen = _selected(ctx, features["train"])
    for name, table in features.items():
        write_table(pa.Table.from_pandas(table[["id", *chosen]], preserve_index=False), ctx.args.features / f"{name}.parquet")
    n_in = sum(record_count(ctx.args.input / f"{s}.parquet") for s in SPLITS)
    extra = {"columns": [spec.name for spec in specs], "features": feature_names(fitted), "values": dict(sorted(counts.items()))}
    if chosen != feature_names(fitted):
        extra["selected"] = chosen
    return Outcome(n_in, n_out, extra)


def _selected(ctx: Context, train: pd.DataFrame) -> list[str]:
    """The features `datasets.<name>.feature_selection` keeps, judged on train (all without it); the
    scores go to selection.json beside fitted.json."""
    rule, names = ctx.dataset.feature_selection, [c for c in train.columns if c != "id"]
    if rule.min_variance is None and rule.mutual_information_top is None:
        return names
    labels = ctx.engine.collect(ctx.engine.read_records(ctx.args.output / "train.parquet", modality=ctx.dataset.modality,
                                                         columns=["id", "label"])).set_index("id")["label"]
    chosen = select_features(train, labels.loc[train["id"]].to_numpy(object), min_variance=rule.min_variance,
                             mutual_information_top=rule.mutual_information_top,
                             seed=derive_seed(ctx.params.seed, "feature_selection", bits=32))
    scores = chosen.scores.astype(object).where(chosen.scores.notna(), None).to_dict("records")
    write_bytes((json.dumps({"kept": chosen.kept, "scores": scores}, indent=1, sort_keys=True) + "\n").encode("utf-8"),
                ctx.args.features / "selection.json")
    return chosen.kept


def _fitted(engine: Engine, train: Partitioned, specs: list) -> Fitted:
    """Every statistic from train's summed value counts."""
    rows = engine.map(train, functools.partial(partial_rows, specs=specs), meta=PARTIAL.empty_table().to_pandas())
    summed = engine.totals(rows, PARTIAL_COLUMNS[:-1], "n")
    return fit(partial_from_rows(summed, specs), specs)  # MetadataError: a treatment train has no values for


def _features(engine: Engine, kept: Partitioned, fitted: Fitted) -> pd.DataFrame:
    """The prepared features of the kept records, sorted by id."""
    names = feature_names(fitted)
    meta = pd.DataFrame({"id": pd.Series(dtype=object), **{n: pd.Series(dtype=_dtype(n, fitted)) for n in names}})
    features = engine.collect(engine.map(kept, functools.partial(record_features, fitted=fitted), meta=meta))
    return features.sort_values("id", kind="stable").reset_index(drop=True)


def _dtype(name: str, fitted: Fitted) -> str:
    """float64 for a numeric feature, int8 for a 0/1 one (one-hot categories, missing indicators)."""
    numeric = {c.spec.name for c in fitted.columns if c.spec.type != "categorical"}
    return "float64" if name in numeric else "int8"


def main(argv: list[str] | None = None) -> int:
    return stage_main("prepare", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
