"""The record schema every stage reads and writes, and the stable ids and content hashes.

A record set is a pandas DataFrame with exactly the columns of `SCHEMA`. Text records fill
`text`; image records fill `image` (encoded bytes), `width` and `height`. Originals have a null
`parent_id`; records made by augmentation or oversampling name their parent and the `op` (JSON)
that made them, and carry its `metadata`: the values of the dataset's declared metadata columns as
read from the source, canonical JSON (null when none is declared).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
import pyarrow as pa

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("text", pa.string()),
        pa.field("image", pa.binary()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.int64()),
        pa.field("source_split", pa.string()),
        pa.field("group_id", pa.string(), nullable=False),
        pa.field("parent_id", pa.string()),
        pa.field("op", pa.string()),
        pa.field("metadata", pa.string()),
    ]
)
COLUMNS = SCHEMA.names


def make_id(*parts: object) -> str:
    """A 16-hex-digit id derived from `parts` alone, so the same source gives the same id."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(str(part).encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def text_hash(text: str) -> str:
    """Content hash of a text (SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def source_location(frame: pd.DataFrame) -> pd.Series:
    """`file:row` of each record (just the file for image files), for ledger details."""
    rows = frame["source_row"].astype("string")
    return frame["source"] + (":" + rows).fillna("")


def pixel_hash(mode: str, size: tuple[int, int], pixels: bytes) -> str:
    """Content hash of decoded pixels, so one picture saved twice in two formats hashes alike."""
    digest = hashlib.sha256(f"{mode}:{size[0]}x{size[1]}:".encode())
    digest.update(pixels)
    return digest.hexdigest()


def op_json(op: dict[str, Any]) -> str:
    """Canonical JSON for the `op` column (sorted keys, so equal ops give equal bytes)."""
    return json.dumps(op, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def empty_frame() -> pd.DataFrame:
    """A record set with no rows and the schema's columns."""
    return SCHEMA.empty_table().to_pandas()


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Reorder to the schema's columns, adding missing nullable ones; fail on unknown columns."""
    extra = set(frame.columns) - set(COLUMNS)
    if extra:
        raise ValueError(f"record set has columns outside the schema: {sorted(extra)}")
    out = frame.copy()
    for name in COLUMNS:
        if name not in out.columns:
            out[name] = None
    return out[COLUMNS].reset_index(drop=True)


def to_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table with the exact schema (types enforced, index dropped)."""
    return pa.Table.from_pandas(conform(frame), schema=SCHEMA, preserve_index=False).replace_schema_metadata(None)
