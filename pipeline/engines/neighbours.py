"""Near-duplicate pairs of a partitioned record set, found without gathering it: the chain of
shuffles that dedup and the leakage certificate share.

`signed` is a table materialized by key (`Engine.materialize(key="key")`) with each record's
signature (`steps.dedup.signatures`): MinHash values and shingle sets for texts, perceptual
hashes for images. Text candidates meet in a shuffle on (band, band hash), where their sketches
screen them, are deduplicated in a shuffle on the pair and verified by exact Jaccard (or the
MinHash estimate), each record's data brought to the pair by routing the pair to its partition. Image
candidates meet in a shuffle on multi-index hash blocks and are verified on the whole hash.
"""
from __future__ import annotations

import functools

import pandas as pd
import pyarrow as pa

from pipeline.engines.engine import Engine, Partitioned
from pipeline.steps import candidates
from pipeline.steps.neardup import NearDupSettings

PAIRS = pa.schema([("a", pa.uint64()), ("b", pa.uint64())])
BANDS_PER_SHUFFLE = 8
VERIFIED = {"text": pa.schema([*PAIRS, ("similarity", pa.float64())]), "image": pa.schema([*PAIRS, ("distance", pa.int64())])}


def text_pairs(engine: Engine, signed: Partitioned, settings: NearDupSettings) -> Partitioned:
    """Verified text pairs (`a` < `b`, `similarity`) among `signed` for one pass's `settings`.

    Bands go through the shuffle `BANDS_PER_SHUFFLE` at a time (as NeMo Curator's
    buckets_per_shuffle), so each shuffle moves a bounded share of the rows.
    """
    minhash = engine.columns(signed, ["key", "minhash"])
    found = []
    for start in range(0, settings.bands, BANDS_PER_SHUFFLE):
        bands = range(start, min(start + BANDS_PER_SHUFFLE, settings.bands))
        rows = engine.map(minhash, functools.partial(candidates.band_rows, settings=settings, bands=bands),
                          meta=candidates.band_rows(empty(signed), settings, bands))
        pairs = engine.group(rows, ["band", "bucket"], functools.partial(candidates.bucket_pairs, settings=settings),
                             order=["band", "bucket", "key"], meta=empty(PAIRS))
        found.append(engine.materialize(pairs, schema=PAIRS))
    unique = engine.group(engine.concat(found), ["a", "b"], _unique, order=["a", "b"], meta=empty(PAIRS))
    evidence = engine.columns(signed, ["key", "shingles" if settings.verify == "exact" else "minhash"])
    both = attach(engine, attach(engine, unique, "a", evidence, signed), "b", evidence, signed)
    verified = engine.map(both, functools.partial(candidates.jaccard_pairs, settings=settings), meta=empty(VERIFIED["text"]))
    return engine.materialize(verified, schema=VERIFIED["text"])


def image_pairs(engine: Engine, signed: Partitioned, max_distance: int) -> Partitioned:
    """Image pairs (`a` < `b`, `distance`) within `max_distance` bits among `signed`."""
    rows = engine.map(engine.columns(signed, ["key", "phash"]), functools.partial(candidates.chunk_rows, max_distance=max_distance),
                      meta=candidates.chunk_rows(empty(signed), max_distance))
    pairs = engine.group(rows, ["chunk", "value"], functools.partial(candidates.chunk_pairs, max_distance=max_distance),
                         order=["chunk", "value", "key"], meta=empty(VERIFIED["image"]))
    return engine.materialize(pairs, schema=VERIFIED["image"])


def attach(engine: Engine, pairs: Partitioned, end: str, table: Partitioned, onto: Partitioned) -> Partitioned:
    """`pairs` with the columns of `table` (partitioned as `onto`) for their `end` record, suffixed `_a`/`_b`."""
    routed = engine.route(pairs, end, onto=onto)
    return engine.zip(functools.partial(_join, end=end), routed, table, meta=_join(pairs.frame._meta, table.frame._meta, end=end))


def empty(of: pa.Schema | Partitioned) -> pd.DataFrame:
    """No rows, with the columns and types of a schema or of a partitioned table."""
    return of.frame._meta.iloc[0:0] if isinstance(of, Partitioned) else of.empty_table().to_pandas()


def _join(pairs: pd.DataFrame, table: pd.DataFrame, *, end: str) -> pd.DataFrame:
    renamed = table.rename(columns={c: f"{c}_{end}" for c in table.columns if c != "key"}).rename(columns={"key": end})
    return pairs.merge(renamed, on=end, how="inner")


def _unique(pairs: pd.DataFrame) -> pd.DataFrame:
    return pairs.drop_duplicates(ignore_index=True)
