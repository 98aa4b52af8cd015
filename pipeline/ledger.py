"""Every record's fate in a stage, and the stage's balanced account of them.

A stage tells its `Ledger` which records it dropped (with a reason), merged (into a survivor) or
generated (from a parent). The ledger writes those rows as Parquet and computes the stage metrics,
refusing to write an account where `in + generated != out + merged + dropped`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("fate", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("into", pa.string()),
        pa.field("parent_id", pa.string()),
        pa.field("detail", pa.string()),
    ]
)
FATES = ("dropped", "merged", "generated", "flagged")


class UnbalancedError(RuntimeError):
    """A stage's counts do not add up: a record was lost or invented without a trace."""


@dataclass(slots=True)
class Ledger:
    """Fates of the records that did not pass a stage unchanged."""

    stage: str
    rows: list[tuple[str, str, str, str | None, str | None, str | None]] = field(default_factory=list)

    def drop(self, ids: Iterable[str], reason: str | Iterable[str], details: Iterable[str | None] | None = None) -> None:
        """Record `ids` as dropped; `reason` is one string or one per id."""
        ids = list(ids)
        reasons = [reason] * len(ids) if isinstance(reason, str) else list(reason)
        details = [None] * len(ids) if details is None else [_text_or_none(d) for d in details]
        self.rows.extend((self.stage, i, "dropped", r, None, None, d) for i, r, d in zip(ids, reasons, details, strict=True))

    def merge(self, ids: Iterable[str], into: Iterable[str], reason: str, details: Iterable[str | None] | None = None) -> None:
        """Record `ids` as merged into the survivors `into` (one per id), with optional details."""
        ids, into = list(ids), list(into)
        details = [None] * len(ids) if details is None else [_text_or_none(d) for d in details]
        self.rows.extend((self.stage, i, "merged", reason, s, None, d) for i, s, d in zip(ids, into, details, strict=True))

    def generate(self, ids: Iterable[str], parents: Iterable[str], reason: str) -> None:
        """Record `ids` as new records made from `parents` (one per id)."""
        self.rows.extend((self.stage, i, "generated", reason, None, p, None) for i, p in zip(ids, parents, strict=True))

    def flag(self, ids: Iterable[str], reason: str, details: Iterable[str | None] | None = None) -> None:
        """Record `ids` as kept but flagged (they still count as `out`)."""
        ids = list(ids)
        details = [None] * len(ids) if details is None else [_text_or_none(d) for d in details]
        self.rows.extend((self.stage, i, "flagged", reason, None, None, d) for i, d in zip(ids, details, strict=True))

    def flag_each(self, ids: Iterable[str], flags: Iterable[Iterable[tuple[str, str]]]) -> None:
        """Record each kept id with its own (flag, detail) pairs, grouped by flag name."""
        by_name: dict[str, list[tuple[str, str]]] = {}
        for record_id, pairs in zip(ids, flags, strict=True):
            for name, detail in pairs:
                by_name.setdefault(name, []).append((record_id, detail))
        for name, rows in sorted(by_name.items()):
            self.flag([r[0] for r in rows], name, [r[1] for r in rows])

    def count(self, fate: str) -> Counter[str]:
        """Records per reason for one fate."""
        return Counter(row[3] for row in self.rows if row[2] == fate)

    def table(self) -> pa.Table:
        """The ledger rows, sorted by fate, reason and id so the bytes are reproducible."""
        rows = sorted(self.rows, key=lambda r: (r[2], r[3], r[1]))
        columns = list(zip(*rows)) if rows else [[] for _ in LEDGER_SCHEMA]
        return pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, LEDGER_SCHEMA)], schema=LEDGER_SCHEMA)

    def account(self, *, n_in: int, n_out: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stage metrics with `in`, `out`, `generated`, `merged`, `dropped`; raises if they do not balance."""
        dropped = dict(sorted(self.count("dropped").items()))
        generated = sum(self.count("generated").values())
        merged = sum(self.count("merged").values())
        if n_in + generated != n_out + merged + sum(dropped.values()):
            raise UnbalancedError(
                f"stage {self.stage}: in {n_in} + generated {generated} != out {n_out} + merged {merged} + dropped {sum(dropped.values())}"
            )
        flagged = dict(sorted(self.count("flagged").items()))
        metrics = {"in": n_in, "out": n_out, "generated": generated, "merged": merged, "dropped": dropped}
        if flagged:
            metrics["flagged"] = flagged
        return {**metrics, **(extra or {})}


def _text_or_none(value: object) -> str | None:
    """Detail text, with pandas' missing values (None, NaN, NA) as None."""
    if value is None or isinstance(value, str):
        return value
    return None if pd.isna(value) else str(value)
