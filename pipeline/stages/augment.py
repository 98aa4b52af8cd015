"""Augment: add variants of train records (nlpaug for text, albumentations for images), train only.

A variant identical to its parent, or to any record in any split, is dropped and counted: it would
add nothing, or leak. A preview of originals beside their variants is written for people.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pandas as pd

from pipeline.engines import map_chunks
from pipeline.io import read_records, write_records
from pipeline.stages.base import Context, Outcome, StageError, entry, stage_main
from pipeline.steps.augment import (
    AugmenterUnavailable, augment_images, augment_texts, check_augmenters, transform_spec, variant_counts,
)
from pipeline.steps.preview import write_preview


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of train/val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="record set directory for augmented train")
    parser.add_argument("--preview", required=True, type=Path, help="folder for the preview of variants")


def run(ctx: Context) -> Outcome:
    train = read_records(ctx.args.input / "train.parquet")
    held_out = pd.concat([read_records(ctx.args.input / f"{s}.parquet", columns=["content_hash"]) for s in ("val", "test")])
    variants = _variants(ctx, train)
    ctx.ledger.generate(variants["id"], variants["parent_id"], "augmented")
    keep = _drop_redundant(ctx, variants, train, held_out)
    out = pd.concat([train, keep], ignore_index=True)
    write_records(out, ctx.args.output)
    write_preview(train, keep, ctx.args.preview, modality=ctx.dataset.modality)
    extra = {"labels": out["label"].value_counts().sort_index().to_dict(), "variants_kept": len(keep)}
    return Outcome(len(train), len(out), extra)


def _variants(ctx: Context, train: pd.DataFrame) -> pd.DataFrame:
    """Generated records for the eligible train records, with the parent's label, group and source."""
    params = ctx.params.augment.text if ctx.dataset.modality == "text" else ctx.params.augment.image
    counts = variant_counts(train, params, ctx.params.seed)
    eligible = train[counts > 0]
    if ctx.dataset.modality == "text":
        try:
            check_augmenters(params.augmenters)
        except AugmenterUnavailable as exc:
            raise StageError(str(exc)) from None
        fn, column = functools.partial(augment_texts, params=params, seed=ctx.params.seed), "text"
    else:
        _check_transform(params.transform)
        fn, column = functools.partial(augment_images, params=params, seed=ctx.params.seed), "image"
    items = list(zip(eligible["id"], eligible[column], counts[counts > 0]))
    engine = ctx.params.engine
    made = map_chunks(fn, items, workers=engine.workers, chunk_size=max(1, engine.chunk_size // 8), desc="augment")
    generated = pd.DataFrame({
        "id": [v.id for v in made], "parent_id": [v.parent_id for v in made], "content_hash": [v.content_hash for v in made],
        "op": [v.op for v in made], column: [getattr(v, column) for v in made],
    })
    parents = train.set_index("id").loc[generated["parent_id"], ["label", "source", "source_row", "source_split", "group_id", "width", "height"]]
    return pd.concat([generated, parents.reset_index(drop=True)], axis=1)


def _check_transform(transform: dict) -> None:
    try:
        transform_spec(transform)
    except Exception as exc:  # albumentations raises many types for a bad dict
        raise StageError(f"params augment.image.transform is not a loadable albumentations dict: {exc}") from None


def _drop_redundant(ctx: Context, variants: pd.DataFrame, train: pd.DataFrame, held_out: pd.DataFrame) -> pd.DataFrame:
    """Variants equal to their parent, to any existing record, or to an earlier variant are dropped."""
    parent_hash = train.set_index("id")["content_hash"]
    same_as_parent = variants["content_hash"].to_numpy() == parent_hash.loc[variants["parent_id"]].to_numpy()
    existing = set(train["content_hash"]) | set(held_out["content_hash"])
    ordered = variants.sort_values("id")
    repeat = ordered["content_hash"].duplicated().reindex(variants.index)
    reason = pd.Series(None, index=variants.index, dtype="object")
    reason[repeat] = "duplicate_variant"
    reason[variants["content_hash"].isin(existing)] = "identical_to_existing"
    reason[same_as_parent] = "identical_to_parent"
    dropped = reason.notna()
    ctx.ledger.drop(variants.loc[dropped, "id"], reason[dropped])
    return variants.loc[~dropped]


def main(argv: list[str] | None = None) -> int:
    return stage_main("augment", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
