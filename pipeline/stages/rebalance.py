"""Rebalance: resample or clean train classes (imbalanced-learn) and write the final dataset and its card.

val and test are copied unchanged from split; only train is resampled.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.io import read_records, write_json, write_records
from pipeline.stages.base import Context, Outcome, StageError, entry, stage_main
from pipeline.steps.card import make_card
from pipeline.steps.embed import image_embeddings, text_embeddings
from pipeline.steps.rebalance import CLEANING, rebalance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, type=Path, help="augmented train record set")
    parser.add_argument("--split", required=True, type=Path, help="folder with val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="final dataset folder")


def run(ctx: Context) -> Outcome:
    train = read_records(ctx.args.train).sort_values("id", kind="stable").reset_index(drop=True)
    params = ctx.params.rebalance
    vectors = _embeddings(ctx, train) if params.strategy in CLEANING else None
    try:
        result = rebalance(train, params, ctx.params.seed, vectors)
    except ValueError as exc:
        raise StageError(str(exc)) from None
    ctx.ledger.generate(result.copies["id"], result.copies["parent_id"], "oversampled")
    ctx.ledger.drop(result.dropped, result.reason)
    splits = {"train": result.train, **{s: read_records(ctx.args.split / f"{s}.parquet") for s in ("val", "test")}}
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


def _embeddings(ctx: Context, train):
    """Embeddings of train records (in id order) from the offline model of the dataset's modality."""
    threads = ctx.params.finetune.threads
    if ctx.dataset.modality == "text":
        return text_embeddings(train["text"].tolist(), threads=threads)
    return image_embeddings(train["image"].tolist(), threads=threads)


def main(argv: list[str] | None = None) -> int:
    return stage_main("rebalance", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)
