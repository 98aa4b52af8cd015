"""Prepare: the metadata columns made ready for a model, every statistic fitted on train alone.

Runs after split and before augment, so nothing generated later can weigh on a statistic, and
every drop happens before a record is copied. Fitting is an aggregation: each train partition
counts its parsed values (`pipeline.steps.metadata.partial_rows`), the engine sums the counts, and
`fit` reads every statistic off the sums in sorted order, so any partitioning gives the same bytes.
The fitted statistics (`fitted.json`: what a served model needs to prepare its inputs as training
did) are applied to train, val and test partition by partition: records whose value is missing
(`missing: drop`), outside the train bounds (`outliers: drop`) or unparseable are dropped with the
reason `missing:<column>`, `outlier:<column>` or `unparseable:<column>`; the others go on
unchanged, and their prepared features (`id` and one column per feature) are written per split.
Without metadata columns the record sets pass through unchanged.
"""
from __future__ import annotations

import argparse
import functools
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.engines import Engine, Partitioned, open_engine
from pipeline.io import record_count, write_bytes, write_table
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.metadata import (PARTIAL_COLUMNS, Fitted, feature_names, fit, partial_from_rows, partial_rows, prepare_records,
                                     record_features, spec_of, to_json)

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
    counts, n_out = Counter(), 0
    for name, records in splits.items():
        kept, fates, counted = engine.process(records, functools.partial(prepare_records, fitted=fitted))
        ctx.ledger.record_spills(fates)
        counts.update(counted)
        n_out += engine.write_records(kept, ctx.args.output / f"{name}.parquet")
        _write_features(engine, engine.read_records(ctx.args.output / f"{name}.parquet", modality=modality), fitted,
                        ctx.args.features / f"{name}.parquet")
    n_in = sum(record_count(ctx.args.input / f"{s}.parquet") for s in SPLITS)
    extra = {"columns": [spec.name for spec in specs], "features": feature_names(fitted), "values": dict(sorted(counts.items()))}
    return Outcome(n_in, n_out, extra)


def _fitted(engine: Engine, train: Partitioned, specs: list) -> Fitted:
    """Every statistic from train's summed value counts."""
    rows = engine.map(train, functools.partial(partial_rows, specs=specs), meta=PARTIAL.empty_table().to_pandas())
    summed = engine.totals(rows, PARTIAL_COLUMNS[:-1], "n")
    return fit(partial_from_rows(summed, specs), specs)  # MetadataError: a treatment train has no values for


def _write_features(engine: Engine, kept: Partitioned, fitted: Fitted, path: Path) -> None:
    """The prepared features of the kept records, sorted by id, as one Parquet file."""
    names = feature_names(fitted)
    meta = pd.DataFrame({"id": pd.Series(dtype=object), **{n: pd.Series(dtype=_dtype(n, fitted)) for n in names}})
    features = engine.collect(engine.map(kept, functools.partial(record_features, fitted=fitted), meta=meta))
    features = features.sort_values("id", kind="stable").reset_index(drop=True)
    write_table(pa.Table.from_pandas(features, preserve_index=False), path)


def _dtype(name: str, fitted: Fitted) -> str:
    """float64 for a numeric feature, int8 for a 0/1 one (one-hot categories, missing indicators)."""
    numeric = {c.spec.name for c in fitted.columns if c.spec.type != "categorical"}
    return "float64" if name in numeric else "int8"


def main(argv: list[str] | None = None) -> int:
    return stage_main("prepare", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
