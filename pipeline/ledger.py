"""Every record's fate in a stage, and the stage's balanced account of them.

Steps hand their stage `Fates`: the ledger rows of the records that did not pass unchanged
(dropped, with a reason; merged, into a survivor; generated, from a parent; flagged, kept with a
remark). A stage hands them to its `Ledger` with `record`, the one way in. The ledger writes
them as Parquet and computes the stage metrics, refusing an account where
`in + generated != out + merged + dropped`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
COLUMNS = ["id", "fate", "reason", "into", "parent_id", "detail"]
FATES_SCHEMA = pa.schema([LEDGER_SCHEMA.field(name) for name in COLUMNS])
ROW_GROUP = 1024 * 1024  # pyarrow's default: a ledger of fewer rows is one row group


class UnbalancedError(RuntimeError):
    """A stage's counts do not add up: a record was lost or invented without a trace."""


class Verdict(Protocol):
    """What a per-record check returns: a drop reason (None keeps the record), a detail, and flags."""

    reason: str | None
    detail: str | None
    flags: tuple[tuple[str, str], ...]


@dataclass(slots=True, frozen=True)
class Fates:
    """Ledger rows (columns `COLUMNS`, one per record and reason) of records that did not pass unchanged."""

    frame: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS, dtype=object))

    @classmethod
    def dropped(cls, ids: Iterable[str], reason: str | Iterable[str], details: Iterable[object] | None = None) -> Fates:
        """`ids` removed; `reason` is one string or one per id."""
        return cls._rows("dropped", ids, reason, details=details)

    @classmethod
    def merged(cls, ids: Iterable[str], into: Iterable[str], reason: str | Iterable[str],
               details: Iterable[object] | None = None) -> Fates:
        """`ids` merged into the survivors `into` (one per id); `reason` is one string or one per id."""
        return cls._rows("merged", ids, reason, into=into, details=details)

    @classmethod
    def generated(cls, ids: Iterable[str], parents: Iterable[str], reason: str) -> Fates:
        """`ids` made from `parents` (one per id)."""
        return cls._rows("generated", ids, reason, parents=parents)

    @classmethod
    def flagged(cls, ids: Iterable[str], reason: str | Iterable[str], details: Iterable[object] | None = None) -> Fates:
        """`ids` kept with a remark (they still count as out)."""
        return cls._rows("flagged", ids, reason, details=details)

    @classmethod
    def from_verdicts(cls, ids: Sequence[str], verdicts: Sequence[Verdict], where: Sequence[str]) -> Fates:
        """Per-record verdicts: a drop for each reason (detail `where: detail`), a flag for each kept record's flags."""
        drops = [(i, v.reason, f"{w}: {v.detail}" if v.detail else w) for i, v, w in zip(ids, verdicts, where, strict=True)
                 if v.reason is not None]
        flags = [(i, name, detail) for i, v in zip(ids, verdicts, strict=True) if v.reason is None for name, detail in v.flags]
        return cls.dropped(*_columns(drops, 3)) + cls.flagged(*_columns(flags, 3))

    @classmethod
    def _rows(cls, fate: str, ids: Iterable[str], reason: str | Iterable[str], *, into: Iterable[str] | None = None,
              parents: Iterable[str] | None = None, details: Iterable[object] | None = None) -> Fates:
        ids = list(ids)
        columns = {
            "id": ids, "fate": [fate] * len(ids),
            "reason": [reason] * len(ids) if isinstance(reason, str) else _one_per_id(reason, ids, "reason"),
            "into": _one_per_id(into, ids, "into"), "parent_id": _one_per_id(parents, ids, "parents"),
            "detail": [_text_or_none(d) for d in _one_per_id(details, ids, "details")],
        }
        return cls(pd.DataFrame(columns, columns=COLUMNS, dtype=object))

    def __add__(self, other: Fates) -> Fates:
        parts = [f for f in (self.frame, other.frame) if len(f)]
        return Fates(pd.concat(parts, ignore_index=True)) if len(parts) > 1 else Fates(parts[0] if parts else self.frame)

    def __len__(self) -> int:
        return len(self.frame)

    def of(self, fate: str) -> pd.DataFrame:
        """The rows of one fate."""
        return self.frame[self.frame["fate"] == fate]

    def table(self) -> pa.Table:
        """The rows as Arrow, with the ledger's types (for a spill file)."""
        return pa.Table.from_pydict({c: self.frame[c].tolist() for c in COLUMNS}, schema=FATES_SCHEMA)


@dataclass(slots=True)
class Processed:
    """What a step made of one partition: the records it passes on, the fates of the others, and
    counts the engine sums over partitions (for the stage metrics)."""

    records: pd.DataFrame
    fates: Fates = field(default_factory=Fates)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Ledger:
    """Fates of the records that did not pass a stage unchanged: in memory, or in the spill files
    the engine wrote for each partition."""

    stage: str
    parts: list[pd.DataFrame] = field(default_factory=list)
    spills: list[Path] = field(default_factory=list)

    def record(self, *fates: Fates) -> None:
        """Add what steps (or the stage) decided."""
        self.parts.extend(f.frame for f in fates if len(f))

    def record_spills(self, paths: Sequence[Path]) -> None:
        """Add the fates the engine spilled, partition by partition."""
        self.spills.extend(paths)

    def rows(self) -> pd.DataFrame:
        """Every recorded row, in the order recorded."""
        spilled = [pq.read_table(p).to_pandas() for p in self.spills]
        parts = [p for p in [*self.parts, *spilled] if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else Fates().frame

    def count(self, fate: str) -> Counter[str]:
        """Records per reason for one fate."""
        return Counter({reason: n for (f, reason), n in self._counts().items() if f == fate})

    def _counts(self) -> Counter[tuple[str, str]]:
        """Rows per (fate, reason), read from the fate and reason columns alone."""
        counts: Counter[tuple[str, str]] = Counter()
        for frame in [*self.parts, *(pq.read_table(p, columns=["fate", "reason"]).to_pandas() for p in self.spills)]:
            counts.update(zip(frame["fate"], frame["reason"]))
        return counts

    def table(self) -> pa.Table:
        """The ledger rows, sorted by fate, reason and id so the bytes are reproducible."""
        rows = self.rows().sort_values(["fate", "reason", "id"], kind="stable")
        columns = {"stage": [self.stage] * len(rows), **{c: [_text_or_none(v) for v in rows[c]] for c in COLUMNS}}
        return pa.Table.from_pydict(columns, schema=LEDGER_SCHEMA)

    def account(self, *, n_in: int, n_out: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stage metrics with `in`, `out`, `generated`, `merged`, `dropped`; raises if they do not balance."""
        counts = self._counts()
        by_fate = {fate: Counter({r: n for (f, r), n in counts.items() if f == fate}) for fate in FATES}
        dropped = dict(sorted(by_fate["dropped"].items()))
        generated = sum(by_fate["generated"].values())
        merged = sum(by_fate["merged"].values())
        if n_in + generated != n_out + merged + sum(dropped.values()):
            raise UnbalancedError(
                f"stage {self.stage}: in {n_in} + generated {generated} != out {n_out} + merged {merged} + dropped {sum(dropped.values())}"
            )
        flagged = dict(sorted(by_fate["flagged"].items()))
        metrics = {"in": n_in, "out": n_out, "generated": generated, "merged": merged, "dropped": dropped}
        if flagged:
            metrics["flagged"] = flagged
        return {**metrics, **(extra or {})}


def _one_per_id(values: Iterable[object] | None, ids: list[str], name: str) -> list[object]:
    if values is None:
        return [None] * len(ids)
    values = list(values)
    if len(values) != len(ids):
        raise ValueError(f"{len(values)} {name} for {len(ids)} ids: give one per id")
    return values


def _columns(rows: list[tuple], width: int) -> list[list]:
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]


def _text_or_none(value: object) -> str | None:
    """Detail text, with pandas' missing values (None, NaN, NA) as None."""
    if value is None or isinstance(value, str):
        return value
    return None if pd.isna(value) else str(value)
