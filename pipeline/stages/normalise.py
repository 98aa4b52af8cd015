"""Normalise: canonical Unicode and whitespace for texts; images decoded once, quality-checked, resized and re-encoded.

Content hashes are recomputed on the normalised content, so dedup compares what the model sees.
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import pandas as pd

from pipeline.engines import open_engine
from pipeline.engines.engine import Engine, Partitioned
from pipeline.params import NormaliseParams
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.normalise import measure_partition, normalise_partition
from pipeline.steps.quality import fix_relative_limits, measure_columns

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="record set from clean")
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    records = engine.read_records(ctx.args.input, modality=modality)
    params, extra = ctx.params.normalise, {}
    if modality == "image" and measure_columns(params.image.quality):
        params, extra["quality_limits"] = fit_quality_limits(engine, records, params)
    step = functools.partial(normalise_partition, modality=modality, params=params)
    kept, fates, counts = engine.process(records, step)
    ctx.ledger.record_spills(fates)
    return Outcome(counts["in"], engine.write_records(kept, ctx.args.output), extra)


def fit_quality_limits(engine: Engine, records: Partitioned, params: NormaliseParams) -> tuple[NormaliseParams, dict]:
    """Measure every image once, then make each corpus-relative quality limit absolute (see
    `fix_relative_limits`): params for the real pass, and the limits decided, for the metrics."""
    columns = measure_columns(params.image.quality)
    meta = pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    measured = engine.collect(engine.map(records, measure_partition, meta=meta, params=params.image, columns=columns))
    quality, decided = fix_relative_limits(params.image.quality, measured)
    log.info("corpus-relative quality limits: %s", {name: d["applied"] for name, d in decided.items()})
    image = params.image.model_copy(update={"quality": quality})
    return params.model_copy(update={"image": image}), decided


def main(argv: list[str] | None = None) -> int:
    return stage_main("normalise", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
