"""Clean: read the source, canonicalise labels, repair texts or check image files, drop the unusable.

Every row or file of the source is accounted for: it is kept, or dropped with a reason in the
ledger whose detail names the file and line.
"""
from __future__ import annotations

import argparse
import functools
from collections import Counter
from pathlib import Path

import pandas as pd

from pipeline.engines import map_chunks
from pipeline.io import write_records
from pipeline.ledger import Fates
from pipeline.records import conform, source_location
from pipeline.sources import read_source
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.clean import Verdict, canonical_label, clean_texts, inspect_images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, type=Path, help="record set directory to write")
    parser.add_argument("--root", default=Path("."), type=Path, help="folder the dataset's source is relative to")


def run(ctx: Context) -> Outcome:
    raw = read_source(ctx.dataset, ctx.args.root)
    n_in = len(raw)
    raw = _drop(ctx, raw, raw["reject"].notna(), raw["reject"], raw["detail"])
    raw = _labels(ctx, raw)
    verdicts = _content_verdicts(ctx, raw)
    ctx.ledger.record(Fates.from_verdicts(raw["id"].tolist(), verdicts, source_location(raw).tolist()))
    kept = [v.reason is None for v in verdicts]
    records = _records(raw.loc[kept], [v for v, k in zip(verdicts, kept) if k], ctx.dataset.modality)
    write_records(records, ctx.args.output)
    extra = {
        "labels": records["label"].value_counts().sort_index().to_dict(),
        "repaired": dict(sorted(Counter(r for v in verdicts for r in getattr(v, "repairs", ())).items())),
        **({"encoding": raw_encoding} if (raw_encoding := raw.attrs.get("encoding")) else {}),
    }
    return Outcome(n_in, len(records), extra)


def _drop(ctx: Context, frame: pd.DataFrame, mask: pd.Series, reasons: pd.Series, details: pd.Series) -> pd.DataFrame:
    """Ledger the rows under `mask` as dropped and return the rest."""
    ctx.ledger.record(Fates.dropped(frame.loc[mask, "id"], reasons[mask], details[mask]))
    return frame.loc[~mask]


def _labels(ctx: Context, raw: pd.DataFrame) -> pd.DataFrame:
    results = [canonical_label(label, ctx.dataset) for label in raw["label"]]
    labels = pd.Series([r[0] for r in results], index=raw.index, dtype="object")
    reasons = pd.Series([r[1] for r in results], index=raw.index, dtype="object")
    details = source_location(raw) + ": label " + raw["label"].map(lambda v: "<missing>" if v is None else repr(v))
    kept = _drop(ctx, raw, reasons.notna(), reasons, details)
    return kept.assign(label=labels[kept.index])


def _content_verdicts(ctx: Context, raw: pd.DataFrame) -> list[Verdict]:
    engine = ctx.params.engine
    if ctx.dataset.modality == "text":
        fn, items = functools.partial(clean_texts, params=ctx.params.clean.text), list(raw["text"])
        workers = engine.workers
    else:
        fn, items = functools.partial(inspect_images, params=ctx.params.clean.image), list(raw["image"])
        workers = 1  # a header read and a hash cost less than shipping the file's bytes to a worker
    return map_chunks(fn, items, workers=workers, chunk_size=engine.chunk_size, desc="clean")


def _records(raw: pd.DataFrame, verdicts: list[Verdict], modality: str) -> pd.DataFrame:
    records = raw.drop(columns=["reject", "detail"]).assign(
        content_hash=[v.content_hash for v in verdicts],
        group_id=raw["id"],
        parent_id=None,
        op=None,
    )
    if modality == "text":
        records["text"] = [v.text for v in verdicts]
    else:
        records["width"] = [v.width for v in verdicts]
        records["height"] = [v.height for v in verdicts]
    return conform(records)


def main(argv: list[str] | None = None) -> int:
    return stage_main("clean", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
