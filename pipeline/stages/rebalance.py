"""Rebalance: resample or clean train classes (imbalanced-learn) and write the final dataset and its card.

val and test are copied unchanged from split; only train is resampled.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.engines import chunk_size_for
from pipeline.io import read_records, write_json, write_records
from pipeline.model.models import feature_extractor
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.augment import check_available, generate_variants, keep_new
from pipeline.steps.card import make_card
from pipeline.steps.rebalance import CLEANING, Rebalanced, augment_counts, rebalance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, type=Path, help="augmented train record set")
    parser.add_argument("--split", required=True, type=Path, help="folder with val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="final dataset folder")


def run(ctx: Context) -> Outcome:
    train = read_records(ctx.args.train).sort_values("id", kind="stable").reset_index(drop=True)
    params = ctx.params.rebalance
    held_out = {s: read_records(ctx.args.split / f"{s}.parquet") for s in ("val", "test")}
    if params.strategy == "augment_over":
        result = _augment_over(ctx, train, held_out)
    else:
        vectors = _embeddings(ctx, train) if params.strategy in CLEANING else None
        result = rebalance(train, params, ctx.params.seed, vectors)
    ctx.ledger.record(result.fates)
    splits = {"train": result.train, **held_out}
    for name, frame in splits.items():
        write_records(frame, ctx.args.output / f"{name}.parquet")
    card = make_card(ctx.name, ctx.params, splits)
    write_json(card, ctx.args.output / "card.json")
    extra = {
        "strategy": ctx.params.rebalance.strategy,
        "labels_before": train["label"].value_counts().sort_index().to_dict(),
        "labels_after": result.train["label"].value_counts().sort_index().to_dict(),
        "version": card["version"],
    }
    return Outcome(len(train), len(result.train), extra)


def _augment_over(ctx: Context, train: pd.DataFrame, held_out: dict[str, pd.DataFrame]) -> Rebalanced:
    """New minority records as fresh augmented variants of originals (not exact copies)."""
    modality = ctx.dataset.modality
    params = ctx.params.augment.text if modality == "text" else ctx.params.augment.image
    check_available(modality, params)
    counts = augment_counts(train, ctx.params.rebalance, ctx.params.seed)
    engine = ctx.params.engine
    variants = generate_variants(train, counts, modality, params, ctx.params.seed, workers=engine.workers,
                                 chunk_size=chunk_size_for(ctx.dataset.modality, engine.chunk_size), namespace="rebalance")
    held_out_hashes = {h for frame in held_out.values() for h in frame["content_hash"]}
    kept, fates = keep_new(variants, train, held_out_hashes, reason="augmented_oversample")
    return Rebalanced(pd.concat([train, kept], ignore_index=True), kept, fates)


def _embeddings(ctx: Context, train: pd.DataFrame) -> np.ndarray:
    """The frozen backbone's features of train records (in id order), as the features stage computes them."""
    labels = sorted(set(train["label"]))
    model = feature_extractor(ctx.params.finetune, ctx.dataset.modality, labels, seed=derive_seed(ctx.params.seed, "features", bits=32))
    return model.features(train).numpy()


def main(argv: list[str] | None = None) -> int:
    return stage_main("rebalance", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
