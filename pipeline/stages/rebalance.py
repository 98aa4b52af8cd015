"""Rebalance: resample or clean train classes and write the final dataset and its card.

val and test are copied unchanged from split; only train is resampled. For texts, the metrics'
`tokens` give the fine-tuning tokenizer's counts over the final splits (train with its variants and
copies, as finetune trains on it): per split and class, and the share longer than
`finetune.text.max_length`, which the model never sees whole.

On the engine: the random strategies plan from class counts and the cutoffs of the seed's order
(found on the partitions), then resample partition by partition; augment_over makes its variants
as the augment stage does (the same shuffle on the content hash keeps only new ones). The
cleaning strategies need every train record's neighbours: they take train's vectors in this
process as the features stage does (`--embeddings`: the embed stage's, and only new content,
augmented variants, embedded here; the metrics' `vectors` count each), then drop what they remove
partition by partition. The card's version hash reads the final record sets shard by shard, in id
order. With `--metadata` (prepare's features folder), `final/metadata/{train,val,test}.parquet`
give every final record its prepared metadata features, in the final id order (prepare's row; a
generated record its root original's, under its own id), looked up partition by partition, with
prepare's fitted.json beside them; a dataset without metadata columns gets tables of ids alone, as
prepare writes them.
"""
from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.engines import Partitioned, open_engine
from pipeline.engines.ranks import first_cutoffs
from pipeline.engines.variants import new_variants
from pipeline.errors import StageError
from pipeline.io import (
    ROW_GROUP,
    empty_records,
    record_chunks,
    replacing_folder,
    write_bytes,
    write_json,
    write_table_chunks,
)
from pipeline.model.embedding import shared_vectors
from pipeline.model.models import feature_extractor
from pipeline.seeding import derive_seed
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps import rebalance as steps
from pipeline.steps.augment import check_available, extra_variants
from pipeline.steps.card import VERSION_COLUMNS, describe, make_card
from pipeline.steps.metadata import root_features
from pipeline.steps.tokens import (
    HISTOGRAM,
    TokenCounter,
    token_histogram,
    token_summary,
)

HELD_OUT = ("val", "test")
EXPORTED = ("fitted.json", "selection.json")  # copied from prepare's folder into final/metadata
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, type=Path, help="augmented train record set")
    parser.add_argument("--split", required=True, type=Path, help="folder with val/test record sets from split")
    parser.add_argument("--output", required=True, type=Path, help="final dataset folder")
    parser.add_argument("--embeddings", type=Path, help="the embed stage's vectors, reused by the cleaning strategies "
                                                        "(without it, they embed all of train)")
    parser.add_argument("--metadata", type=Path, help="the prepare stage's features folder (train/val/test.parquet): with "
                                                      "metadata columns declared, each final record's features go to "
                                                      "<output>/metadata (without it, they are not written)")


def run(ctx: Context) -> Outcome:
    engine, modality = ctx.engine, ctx.dataset.modality
    counter = TokenCounter.load(ctx.params.finetune.text.model) if modality == "text" else None  # fails before any work
    features = _prepared_features(ctx)  # so does a missing features folder
    train = engine.read_records(ctx.args.train, modality=modality)
    labels_before = engine.value_counts(train, "label")
    resampled, fates, strategy_metrics = _resampled(ctx, train, labels_before)
    ctx.ledger.record_spills(fates)
    written = {"train": engine.write_records(resampled, ctx.args.output / "train.parquet")}
    for name in HELD_OUT:
        written[name] = engine.write_records(engine.read_records(ctx.args.split / f"{name}.parquet", modality=modality),
                                             ctx.args.output / f"{name}.parquet")
    card = _card(ctx)
    write_json(card, ctx.args.output / "card.json")
    extra = {"strategy": ctx.params.rebalance.strategy, "labels_before": labels_before,
             "labels_after": card["classes"]["train"], "version": card["version"], **strategy_metrics}
    if counter is not None:
        extra["tokens"] = _tokens(ctx, counter)
    if features is not None:
        extra["metadata_rows"] = _final_metadata(ctx, features)
    return Outcome(sum(labels_before.values()), written["train"], extra)


def _prepared_features(ctx: Context) -> dict[str, Path] | None:
    """prepare's features table of each split, where `--metadata` names them (a dataset without
    metadata columns has tables of ids alone, as prepare writes them); None without it (and a
    warning where the dataset declares metadata columns)."""
    if ctx.args.metadata is None:
        if ctx.dataset.metadata:
            log.warning("datasets.%s declares metadata columns but no --metadata (the prepare stage's features folder) was "
                        "given: %s is not written", ctx.name, ctx.args.output / "metadata")
        return None
    paths = {name: ctx.args.metadata / f"{name}.parquet" for name in ("train", *HELD_OUT)}
    for path in paths.values():
        if not path.is_file():
            raise StageError(f"no prepared features at {path}: run the prepare stage first (--metadata names its --features folder)")
    return paths


def _final_metadata(ctx: Context, features: dict[str, Path]) -> dict[str, int]:
    """`<output>/metadata/<split>.parquet`: each final record's row of prepare's features table (a
    generated record's root's, under its own id), in the final id order, made partition by partition
    with the table as the lookup; written `ROW_GROUP` rows a row group, so the bytes depend on the
    rows alone. prepare's fitted.json (and selection.json) go beside them unchanged, so the folder
    is the whole export. Rows written per split."""
    engine, written = ctx.engine, {}
    with replacing_folder(ctx.args.output / "metadata") as folder:
        for name, path in features.items():
            table = pq.read_table(path)
            schema = table.schema.remove_metadata()
            lookup = table.to_pandas().set_index("id")
            records = engine.read_records(ctx.args.output / f"{name}.parquet", modality=ctx.dataset.modality, columns=["id", "parent_id"])
            rows = engine.map(records, functools.partial(root_features, source=str(path)), meta=schema.empty_table().to_pandas(),
                              features=lookup)
            spilled = engine.materialize(rows, schema=schema)
            written[name] = write_table_chunks(row_groups(spilled.paths, schema), folder / f"{name}.parquet")
        for exported in EXPORTED:  # what a served model needs to prepare its inputs as these were
            source = ctx.args.metadata / exported
            if source.is_file():
                write_bytes(source.read_bytes(), folder / exported)
    return written


def row_groups(paths: Sequence[Path], schema: pa.Schema, rows: int = ROW_GROUP) -> Iterator[pa.Table]:
    """The tables spilled at `paths`, in order, cut again into tables of `rows` rows (the last one
    shorter; one empty table when there are no rows), so that the row groups of the file they are
    written to depend on the rows alone, not on the partitions they were made in."""
    held, yielded = schema.empty_table(), False
    for path in paths:
        held = pa.concat_tables([held, pq.read_table(path, schema=schema).replace_schema_metadata(None)])
        while held.num_rows >= rows:
            yield held.slice(0, rows).combine_chunks()
            held, yielded = held.slice(rows), True
    if held.num_rows or not yielded:
        yield held.combine_chunks()


def _tokens(ctx: Context, counter: TokenCounter) -> dict:
    """The fine-tuning tokenizer's counts over the final splits, as finetune reads them, per split
    and class: summed from each partition's exact histogram, so partitioning changes nothing."""
    engine, splits = ctx.engine, ("train", *HELD_OUT)
    histograms = [engine.map(engine.read_records(ctx.args.output / f"{name}.parquet", modality="text", columns=["label", "text"]),
                             functools.partial(token_histogram, split=name), meta=HISTOGRAM.empty_table().to_pandas(), counter=counter)
                  for name in splits]
    totals = engine.totals(engine.concat(histograms), ["split", "label", "tokens"], "n")
    return token_summary(totals, max_length=ctx.params.finetune.text.max_length, splits=splits)


def _resampled(ctx: Context, train: Partitioned, class_counts: dict[str, int]) -> tuple[Partitioned, list[Path], dict]:
    """Train after the strategy, the fates' spill files and the strategy's own metrics."""
    engine, params, seed = ctx.engine, ctx.params.rebalance, ctx.params.seed
    if params.strategy == "augment_over":
        return (*_augment_over(ctx, train, class_counts), {})
    if params.strategy in steps.CLEANING and len(class_counts) >= 2:
        dropped, counts = _cleaned_away(ctx)
        kept, fates, _ = engine.process(train, functools.partial(steps.drop_ids, ids=dropped, reason=params.strategy))
        return kept, fates, {"vectors": counts}
    ranks, copies = steps.resample_ranks(class_counts, params)
    plan = steps.resample_plan(ranks, copies, first_cutoffs(engine, train, ranks, seed=seed, namespace=steps.ORDER))
    kept, fates, _ = engine.process(train, functools.partial(steps.resample, plan=plan, seed=seed))
    return kept, fates, {}


def _augment_over(ctx: Context, train: Partitioned, class_counts: dict[str, int]) -> tuple[Partitioned, list[Path]]:
    """Train and new minority records made as fresh augmented variants of its originals (not copies)."""
    engine, modality = ctx.engine, ctx.dataset.modality
    params = ctx.params.augment.text if modality == "text" else ctx.params.augment.image
    check_available(modality, params)
    originals = engine.map(train, _originals, meta=empty_records())
    short = steps.augment_shortfalls(class_counts, engine.value_counts(originals, "label"), ctx.params.rebalance)
    cutoff = first_cutoffs(engine, originals, extra_variants(short), seed=ctx.params.seed, namespace=steps.ORDER)
    existing = [ctx.args.train, *(ctx.args.split / f"{name}.parquet" for name in HELD_OUT)]
    kept, fates = new_variants(engine, train, steps.augment_plan(short, cutoff), params, seed=ctx.params.seed, modality=modality,
                               existing=existing, reason="augmented_oversample", namespace="rebalance")
    return engine.concat([train, kept]), fates


def _originals(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["parent_id"].isna()]


def _cleaned_away(ctx: Context) -> tuple[frozenset[str], dict[str, int]]:
    """Ids the cleaning strategy removes, from the frozen backbone's vectors of train in id order,
    which it needs whole (every record's neighbours): the embed stage's where it saw the content, the
    rest embedded as the features stage does; and how many vectors came each way."""
    modality = ctx.dataset.modality
    train = ctx.engine.collect(ctx.engine.read_records(ctx.args.train, modality=modality, columns=["id", "label", "content_hash"]))
    train = train.sort_values("id", kind="stable").reset_index(drop=True)
    model = functools.partial(feature_extractor, ctx.params.finetune, modality, sorted(set(train["label"])),
                              seed=derive_seed(ctx.params.seed, "features", bits=32))
    vectors = shared_vectors(train[["id", "content_hash"]], embeddings=ctx.args.embeddings, path=ctx.args.train,
                             column="text" if modality == "text" else "image", model=model)
    cleaned = steps.rebalance(train, ctx.params.rebalance, ctx.params.seed, vectors.of(train["id"]))
    return frozenset(cleaned.dropped), vectors.counts


def _card(ctx: Context) -> dict:
    """The card of the final record sets, from one pass over their shards in id order."""
    splits = ("train", *HELD_OUT)
    summaries, version = describe({name: record_chunks(ctx.args.output / f"{name}.parquet", VERSION_COLUMNS) for name in splits})
    return make_card(ctx.name, ctx.params, summaries, version)


def main(argv: list[str] | None = None) -> int:
    return stage_main("rebalance", __doc__, add_arguments, run, argv, engine=open_engine)


if __name__ == "__main__":
    entry(__spec__.name, main)
