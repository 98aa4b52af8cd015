"""Clean: read the source, canonicalise labels, repair texts or check image files, drop the unusable.

Every row or file of the source is accounted for: it is kept, or dropped with a reason in the
ledger whose detail names the file and line. With a token bound (`clean.text.min_tokens`,
`max_tokens`), texts are counted by the fine-tuning tokenizer (`finetune.text.model`), which is
loaded only then.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

from pipeline.engines import open_engine
from pipeline.stages.base import Context, Outcome, entry, prefixed, stage_main
from pipeline.steps.clean import clean_partition
from pipeline.steps.tokens import TokenCounter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")
    parser.add_argument("--root", default=Path("."), type=Path, help="folder the dataset's source is relative to")


def run(ctx: Context) -> Outcome:
    engine, count_tokens = ctx.engine, _token_counter(ctx)
    raw, n_in, found = engine.read_source(ctx.dataset, ctx.args.root)
    step = functools.partial(clean_partition, dataset=ctx.dataset, params=ctx.params.clean, count_tokens=count_tokens)
    records, fates, counts = engine.process(raw, step)
    ctx.ledger.record_spills(fates)
    n_out = engine.write_records(records, ctx.args.output)
    extra = {"labels": prefixed(counts, "labels"), "repaired": prefixed(counts, "repaired"), **found}
    return Outcome(n_in, n_out, extra)


def _token_counter(ctx: Context) -> TokenCounter | None:
    """The fine-tuning tokenizer's counter, loaded before any work, when a token bound is set on a
    text dataset; else None, and no tokenizer is loaded."""
    if ctx.dataset.modality != "text" or not ctx.params.clean.text.counts_tokens:
        return None
    return TokenCounter.load(ctx.params.finetune.text.model)


def main(argv: list[str] | None = None) -> int:
    return stage_main("clean", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
