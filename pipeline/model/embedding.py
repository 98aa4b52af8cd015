"""The frozen backbone's vectors of record sets: embedded in fixed chunks, and shared so that no
content is embedded twice.

`feature_tables` is how the embed stage embeds every record after dedup: `CHUNK_ROWS` records at
a time in id order. The chunk size is fixed (the model batches by length inside it, which decides
float bits), never an engine setting, so the vectors depend on the data alone.

`shared_vectors` gives later record sets (the final splits, rebalance's train) a vector per
record without embedding again: a record the embed stage saw (its id is in its file) takes that
vector, bytes unchanged; any other takes the vector of a record of its set with the same content
hash (an oversampled copy takes its parent's); only new content (augmented variants) goes through
the model, each distinct content once, through the first record (by id) that has it, in
`CHUNK_ROWS` chunks in id order. The vectors are kept in a file the OS pages (one row per distinct
source, not per record).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import StageError
from pipeline.io import empty_records, features_table, features_width, record_chunks
from pipeline.model.models import ImageClassifier, TextClassifier

CHUNK_ROWS = 8_192  # records embedded at a time (a multiple of both models' batch sizes)
log = logging.getLogger(__name__)
Extractor = TextClassifier | ImageClassifier


def feature_tables(model: Extractor, path: Path, column: str) -> Iterator[pa.Table]:
    """The features of the record set at `path`, `CHUNK_ROWS` records at a time, in id order (the embed stage's)."""
    for chunk in record_chunks(path, ["id", "label", column], rows=CHUNK_ROWS):
        yield features_table(chunk, model.features(chunk).numpy())


@dataclass(slots=True)
class Vectors:
    """One vector per source record (`matrix`, rows in id order of the sources), the row of each
    record's source (`rows`, by record id) and how each record got it (`counts`)."""

    matrix: np.ndarray
    rows: pd.Series
    counts: dict[str, int]

    def of(self, ids: pd.Series) -> np.ndarray:
        """The vectors of the records `ids`, in their order."""
        return self.matrix[self.rows.loc[ids.to_numpy()].to_numpy()]


def shared_vectors(keys: pd.DataFrame, *, embeddings: Path | None, path: Path, column: str,
                   model: Callable[[], Extractor], store: Path | None = None) -> Vectors:
    """A vector for each record of `keys` (`id`, `content_hash`, sorted by id) of the record set at
    `path`: the embed stage's (from `embeddings`) where it saw the record or its content, else
    embedded by `model()` (called only then), each new content once. The vectors are kept in the
    file `store` (paged by the OS), or in memory without it."""
    embedded = embedded_ids(embeddings)
    sources = vector_sources(keys, embedded)
    rows = pd.Index(sources.unique()).sort_values()
    fresh = rows[~rows.isin(embedded)]
    extractor = model() if len(fresh) or embeddings is None else None
    width = features_width(embeddings) if embeddings is not None else _model_width(extractor, column)
    matrix = vector_store(len(rows), width, store)
    if embeddings is not None and len(rows) > len(fresh):
        copy_embedded(matrix, rows, embeddings)
    if len(fresh):
        embed_fresh(matrix, rows, fresh, path=path, column=column, extractor=extractor)
    counts = source_counts(sources, embedded)
    _log_counts(counts, path, embeddings)
    return Vectors(matrix, pd.Series(rows.get_indexer(sources), index=sources.index), counts)


def record_keys(path: Path) -> pd.DataFrame:
    """Id and content hash of every record of the set at `path`, sorted by id."""
    keys = pd.concat(record_chunks(path, ["id", "content_hash"]), ignore_index=True)
    return keys.sort_values("id", kind="stable", ignore_index=True)


def embedded_ids(embeddings: Path | None) -> pd.Index:
    """Ids the embed stage has vectors of (none without its file); fails if the file is missing."""
    if embeddings is None:
        return pd.Index([], dtype=object)
    if not Path(embeddings).is_file():
        raise StageError(f"no embeddings at {embeddings}: run the embed stage first")
    return pd.Index(pq.read_table(embeddings, columns=["id"]).column("id").to_pandas())


def vector_sources(keys: pd.DataFrame, embedded: pd.Index) -> pd.Series:
    """Each record's source, the record whose vector it takes (ids: index the record's, value the
    source's). A record in `embedded` is its own; any other takes the first such record (by id) with
    its content hash, else the first record with it, which alone will be embedded. `keys` is sorted by id."""
    seen = keys["id"].isin(embedded)
    hashes = keys["content_hash"]
    first_seen = keys[seen].drop_duplicates("content_hash").set_index("content_hash")["id"]
    first = keys.drop_duplicates("content_hash").set_index("content_hash")["id"]
    source = hashes.map(first_seen).fillna(hashes.map(first)).where(~seen, keys["id"])
    return pd.Series(source.to_numpy(), index=keys["id"].to_numpy(), name="source")


def source_counts(sources: pd.Series, embedded: pd.Index) -> dict[str, int]:
    """Records whose own vector the embed stage made (`reused`), that take another record's (`copied`)
    and that are embedded here (`embedded`)."""
    own = sources.to_numpy() == sources.index.to_numpy()
    seen = sources.index.isin(embedded)
    return {"reused": int((own & seen).sum()), "copied": int((~own).sum()), "embedded": int((own & ~seen).sum())}


def vector_store(rows: int, width: int, store: Path | None) -> np.ndarray:
    """A float32 matrix to fill: the file `store`, which the OS pages, or (without, or empty) in memory."""
    if store is None or rows == 0:
        return np.empty((rows, width), dtype=np.float32)
    return np.lib.format.open_memmap(store, mode="w+", dtype=np.float32, shape=(rows, width))


def copy_embedded(matrix: np.ndarray, rows: pd.Index, embeddings: Path) -> None:
    """The embed stage's vectors of the sources in `rows` into their rows of `matrix`, bytes unchanged,
    read `CHUNK_ROWS` at a time."""
    for batch in pq.ParquetFile(embeddings).iter_batches(batch_size=CHUNK_ROWS, columns=["id", "features"]):
        at = rows.get_indexer(batch.column("id").to_pandas())
        vectors = batch.column("features").flatten().to_numpy().reshape(len(at), matrix.shape[1])
        matrix[at[at >= 0]] = vectors[at >= 0]


def embed_fresh(matrix: np.ndarray, rows: pd.Index, fresh: pd.Index, *, path: Path, column: str, extractor: Extractor) -> None:
    """Embed the records `fresh` (sorted ids) into their rows of `matrix`, `CHUNK_ROWS` at a time: the
    chunks, and so the float bits, depend on the data alone."""
    for start in range(0, len(fresh), CHUNK_ROWS):
        ids = fresh[start : start + CHUNK_ROWS]
        vectors = extractor.features(records_of(path, ids, column)).numpy()
        if vectors.shape[1] != matrix.shape[1]:
            raise StageError(f"the model gives {vectors.shape[1]}-wide vectors, the embed stage's are {matrix.shape[1]}-wide: "
                             "rerun the embed stage with these finetune settings")
        matrix[rows.get_indexer(ids)] = vectors


def records_of(path: Path, ids: pd.Index, column: str) -> pd.DataFrame:
    """The records `ids` (sorted) of the set at `path`, in that order, with their content: only the
    row groups of their id range are read."""
    span = [("id", ">=", ids[0]), ("id", "<=", ids[-1])]
    return pq.read_table(path, columns=["id", column], filters=span).to_pandas().set_index("id").loc[ids].reset_index()


def _log_counts(counts: dict[str, int], path: Path, embeddings: Path | None) -> None:
    """How the vectors of the set at `path` were found; a warning when none came from `embeddings`."""
    log.info("%s: %d vectors reused from the embed stage, %d copied by content hash, %d embedded", path.name,
             counts["reused"], counts["copied"], counts["embedded"])
    if embeddings is not None and sum(counts.values()) and not counts["reused"]:
        log.warning("no record of %s has a vector in %s: is it the embed stage's file for this dataset?", path, embeddings)


def _model_width(extractor: Extractor, column: str) -> int:
    """The width of the model's vectors (its output for no records)."""
    return extractor.features(empty_records(["id", column])).shape[1]
