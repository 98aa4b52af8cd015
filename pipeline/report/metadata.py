"""The metadata columns in the data report: what prepare did to each column, as lines of plain text.

`policies`, `statistics` and `counts` describe one column of prepare's `fitted.json` and metrics;
the page escapes every line (column names and categories come from the corpus). Numbers get
`DIGITS` significant digits, datetimes their date and time, long vocabularies their first
`VOCABULARY_SHOWN` categories and a count of the rest, so the same inputs give the same text.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pipeline.steps.metadata import EPOCH, OTHER, ColumnSpec, Fitted, FittedColumn

DIGITS = 4
VOCABULARY_SHOWN = 12
DURATIONS = (("days", 86400.0), ("h", 3600.0), ("min", 60.0))
COUNTS: tuple[tuple[str, str, Callable[[ColumnSpec], bool]], ...] = (  # prepare's `<column>:<key>`, its label, when shown at 0
    ("missing", "missing", lambda spec: True),
    ("imputed", "imputed", lambda spec: spec.missing not in ("keep", "drop")),
    ("dropped_missing", "dropped as missing", lambda spec: spec.missing == "drop"),
    ("clipped_low", "clipped low", lambda spec: spec.outliers in ("clip", "winsorise")),
    ("clipped_high", "clipped high", lambda spec: spec.outliers in ("clip", "winsorise")),
    ("dropped_outlier", "dropped as outliers", lambda spec: spec.outliers == "drop"),
    ("unparseable", "unparseable (dropped)", lambda spec: spec.type != "categorical"),
    ("other", f"outside the vocabulary ({OTHER})", lambda spec: spec.type == "categorical"),
)


@dataclass(frozen=True, slots=True)
class MetadataInputs:
    """prepare's fitted statistics (None where fitted.json was not found) and its feature selection
    scores (selection.json: `kept` and `scores`; None without feature selection)."""

    fitted: Fitted | None
    selection: dict[str, Any] | None = None


def number(value: float | None) -> str:
    """`DIGITS` significant digits ('0', never '-0'); 'none' for None."""
    return "none" if value is None else f"{float(value) + 0.0:.{DIGITS}g}"


def moment(seconds: float) -> str:
    """Seconds since 1970-01-01 as a date and time, to the millisecond where not whole (UTC where the
    column's values named a zone)."""
    try:
        when = EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return f"{number(seconds)} s after 1970-01-01"
    return when.isoformat(sep=" ", timespec="milliseconds" if when.microsecond else "seconds")


def duration(seconds: float) -> str:
    """A spread of datetimes in the largest unit it fills: days, h, min or s."""
    unit, size = next(((u, s) for u, s in DURATIONS if abs(seconds) >= s), ("s", 1.0))
    return f"{number(seconds / size)} {unit}"


def quoted(category: str | None) -> str:
    """A category as a JSON string, so spaces, commas and an empty name stay visible."""
    return "none" if category is None else json.dumps(category, ensure_ascii=False)


def policies(spec: ColumnSpec) -> list[str]:
    """The params that say how the column is prepared, as `key: value` lines."""
    lines = [f"missing: {spec.missing}"] + (["missing_indicator: true"] if spec.missing_indicator else [])
    if spec.type == "categorical":
        return [*lines, f"max_categories: {'all' if spec.max_categories is None else spec.max_categories}"]
    low, high = spec.quantiles
    band = f" (quantiles {number(low)}, {number(high)})" if spec.outliers != "none" else ""
    lines += [f"outliers: {spec.outliers}{band}", f"scale: {spec.scale}"]
    return [*lines, f"format: {spec.format}"] if spec.type == "datetime" else lines


def statistics(column: FittedColumn) -> list[str]:
    """What train taught the column: its values, then what was fitted on them."""
    summary = column.summary
    seen = f"train: {summary.get('count', 0):,} values, {summary.get('missing', 0):,} missing"
    seen += f", {summary['unparseable']:,} unparseable" if summary.get("unparseable") else ""
    if column.spec.type == "categorical":
        return [seen, *_categorical(column)]
    return [seen, *_numeric(column)]


def _categorical(column: FittedColumn) -> list[str]:
    """Distinct values, the most frequent, the fill and the vocabulary (the one-hot columns)."""
    summary, vocabulary = column.summary, column.vocabulary
    lines = [f"{summary.get('distinct', 0):,} distinct, most frequent {quoted(summary.get('most_frequent'))}"]
    lines += [f"imputation value: {quoted(column.fill)}"] if column.fill is not None else []
    shown = ", ".join(quoted(c) for c in vocabulary[:VOCABULARY_SHOWN])
    more = f" … and {len(vocabulary) - VOCABULARY_SHOWN:,} more" if len(vocabulary) > VOCABULARY_SHOWN else ""
    return [*lines, f"vocabulary ({len(vocabulary):,}): {shown or 'none'}{more}"]


def _numeric(column: FittedColumn) -> list[str]:
    """The train values' spread, then the outlier bounds, the fill and the scaler fitted on them."""
    summary, value = column.summary, _value(column.spec)
    spread = duration if column.spec.type == "datetime" else number
    lines = []
    if summary.get("count"):
        lines += [f"min {value(summary['min'])}, median {value(summary['median'])}, max {value(summary['max'])}",
                  f"mean {value(summary['mean'])}, std {spread(summary['std'])}"]
    if column.low is not None:
        lines.append(f"outlier bounds: {value(column.low)} to {value(column.high)}")
    if column.fill is not None:
        lines.append(f"imputation value: {value(column.fill)}")
    if column.scale is not None:
        lines.append(f"scaler: centre {value(column.center)}, scale {spread(column.scale)}")
    return lines


def _value(spec: ColumnSpec) -> Callable[[float], str]:
    return moment if spec.type == "datetime" else number


def counts(spec: ColumnSpec, values: Mapping[str, int]) -> list[str]:
    """prepare's counts of the column (`values`, keys `<name>:<key>`, over train, val and test): every
    count its policies can make, 0 included, then any other it has."""
    prefix = f"{spec.name}:"
    mine = {k[len(prefix):]: n for k, n in values.items() if k.startswith(prefix) and ":" not in k[len(prefix):]}
    known = [f"{label}: {mine.get(key, 0):,}" for key, label, shown in COUNTS if shown(spec) or mine.get(key)]
    names = {key for key, _, _ in COUNTS}
    return known + [f"{key}: {n:,}" for key, n in sorted(mine.items()) if key not in names]
