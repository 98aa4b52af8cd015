"""Metadata: the columns declared beside a record's text or image, prepared without leaking test statistics.

Every statistic is fitted on train alone, after the split, and applied unchanged to train, val and
test (and later to what a served model receives, from `to_json`). Fitting is an aggregation:
`partial_statistics` counts each train partition's values, `merge_partials` sums the counts, and
`fit` reads every statistic off the summed counts in sorted order, so the result is the same bytes
whatever the partitioning and partition order.

A column goes through these steps, in this order, when fitted and when applied:

1. parse: numeric as an ASCII decimal (sign, digits, point, exponent; `1_000`, `nan`, `inf` and a
   value that overflows do not parse), categorical as a stripped string, datetime as
   `datetime.strptime(value, format)` reads it, as float seconds since 1970-01-01 (naive; an aware
   value counts from 1970-01-01 UTC). An empty string is missing; a value that does not parse
   drops its record (`unparseable:<name>`). Strings are parsed a column at a time (Arrow, pandas).
2. missing `drop`: the record is dropped (`missing:<name>`).
3. outliers, with bounds fitted on the parsed non-missing train values: `drop` drops a record outside
   them (`outlier:<name>`); `clip` and `winsorise` move such a value to the nearer bound.
4. impute: `mean`, `median` or `most_frequent` of the train values after step 3, or the `constant`
   `fill`; `keep` leaves NaN (a categorical: no category). The fill is never clipped.
5. scale, fitted on the train values after steps 3 and 4 (imputed values included, NaN not):
   `(x - center) / scale`.
6. encode: a categorical becomes one-hot columns; a `missing_indicator` marks the values step 4 saw missing.

Outliers come before imputation (unlike scikit-learn's usual impute, clip, scale): a mean fill then
never drags an outlier in, and a constant fill stays the value the params name. Each column is
fitted on its own train values, as a ColumnTransformer fits each column on every train row:
records that another column drops still count here, which keeps fitting one pass over train.

Conventions: std is the population std (ddof=0, as StandardScaler); quantiles are numpy's 'linear'
on the sorted values; most frequent breaks ties by the smallest value (or name). `clip` bounds are
the interpolated quantiles; `winsorise` bounds are the train values nearest inside them, so a moved
value is one train has. A zero spread (std, IQR or range) scales by 1, as scikit-learn does.
A partial holds one count per distinct value: for a continuous column, about the column's size.
"""
from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import MetadataError, StageError
from pipeline.ledger import Fates, Processed

TYPES = ("numeric", "categorical", "datetime")
MISSING = {"numeric": ("drop", "mean", "median", "most_frequent", "constant", "keep"),
           "categorical": ("drop", "most_frequent", "constant", "keep")}
OUTLIERS = ("none", "clip", "winsorise", "drop")
SCALES = ("none", "standard", "minmax", "robust")
OTHER = "__other__"  # the one-hot column of every category outside the vocabulary
INDICATOR = "__missing"  # suffix of a missing indicator column
EPOCH = datetime(1970, 1, 1)
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
PROBLEMS = ["id", "reason", "detail"]
TICKS = {"ns": (1000, 1), "us": (1, 1), "ms": (1, 1000), "s": (1, 1_000_000)}  # a pandas unit: (ticks a µs, µs a tick)
CANONICAL = {"%Y": "[0-9]{4}", "%m": "(0[1-9]|1[0-2])", "%d": "(0[1-9]|[12][0-9]|3[01])", "%H": "([01][0-9]|2[0-3])",
             "%M": "[0-5][0-9]", "%S": "[0-5][0-9]", "%f": "[0-9]{6}", "%%": "%"}  # directives with one canonical spelling
NUMBER = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"  # what a numeric string must look like
DESCRIBED = ("mean", "std", "min", "max", "q25", "median", "q75", "iqr", "q_low", "q_high", "most_frequent")
FORMAT_VERSION = 1


# --- specs ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """How one metadata column is prepared (params `metadata.<name>`); the defaults change nothing:
    missing values kept, no outlier treatment, no scaling, every train category kept."""

    name: str
    type: str
    missing: str = "keep"
    fill: float | str | None = None
    missing_indicator: bool = False
    outliers: str = "none"
    quantiles: tuple[float, float] = (0.01, 0.99)
    scale: str = "none"
    max_categories: int | None = None
    format: str | None = None


SPEC_KEYS = tuple(f.name for f in fields(ColumnSpec))


def specs_from_mapping(mapping: Mapping[str, Mapping[str, Any]]) -> list[ColumnSpec]:
    """Checked specs, sorted by name (so reordering the params changes nothing), from
    `{name: {key: value}}`; raises ValueError naming the column and the key."""
    return sorted((_checked(str(name), dict(options or {})) for name, options in mapping.items()),
                  key=lambda spec: spec.name)


def as_spec(spec: Any) -> ColumnSpec:
    """A checked ColumnSpec from anything with its attributes (a pydantic model of the params)."""
    options = {key: getattr(spec, key) for key in SPEC_KEYS if key != "name"}
    return _checked(spec.name, options)


def _checked(name: str, options: dict[str, Any]) -> ColumnSpec:
    unknown = sorted(set(options) - set(SPEC_KEYS[1:]))
    if unknown:
        known = ", ".join(SPEC_KEYS[1:])
        raise ValueError(f"metadata column {name!r}: unknown key {unknown[0]!r}; known keys: {known}")
    if not name or name == "id" or "=" in name or name.endswith(INDICATOR):
        raise ValueError(f"metadata column {name!r}: a name must be non-empty, not 'id', without '=' "
                         f"and not end in {INDICATOR!r} (those name the feature columns)")
    if "type" not in options:
        raise ValueError(f"metadata column {name!r}: 'type' is required, one of {', '.join(TYPES)}")
    if isinstance(options.get("quantiles"), list):
        options["quantiles"] = tuple(options["quantiles"])
    spec = ColumnSpec(name, **options)
    _check_choices(spec)
    _check_for_type(spec)
    _check_fill(spec)
    return spec


def _fail(spec: ColumnSpec, key: str, wanted: str) -> None:
    raise ValueError(f"metadata column {spec.name!r}: {key!r} must be {wanted}; got {getattr(spec, key)!r}")


def _check_choices(spec: ColumnSpec) -> None:
    if spec.type not in TYPES:
        _fail(spec, "type", f"one of {', '.join(TYPES)}")
    if spec.missing not in MISSING[_kind(spec)]:
        _fail(spec, "missing", f"one of {', '.join(MISSING[_kind(spec)])} for a {spec.type} column")
    if spec.outliers not in OUTLIERS:
        _fail(spec, "outliers", f"one of {', '.join(OUTLIERS)}")
    if spec.scale not in SCALES:
        _fail(spec, "scale", f"one of {', '.join(SCALES)}")
    if not isinstance(spec.missing_indicator, bool):
        _fail(spec, "missing_indicator", "true or false")
    if spec.missing_indicator and spec.missing == "drop":
        _fail(spec, "missing_indicator", "false with missing: drop (no kept record is missing)")
    low_high = spec.quantiles
    if (not isinstance(low_high, tuple) or len(low_high) != 2 or not all(_is_number(q) for q in low_high)
            or not 0 <= low_high[0] < low_high[1] <= 1):
        _fail(spec, "quantiles", "[low, high] with 0 <= low < high <= 1")


def _check_for_type(spec: ColumnSpec) -> None:
    if spec.type == "categorical":
        if spec.outliers != "none":
            _fail(spec, "outliers", "none for a categorical column")
        if spec.scale != "none":
            _fail(spec, "scale", "none for a categorical column")
        if spec.max_categories is not None and (not isinstance(spec.max_categories, int)
                                                or isinstance(spec.max_categories, bool) or spec.max_categories < 1):
            _fail(spec, "max_categories", "a positive integer")
    elif spec.max_categories is not None:
        _fail(spec, "max_categories", "unset for a column that is not categorical")
    if spec.type == "datetime" and not (isinstance(spec.format, str) and spec.format):
        _fail(spec, "format", "a strptime format such as '%Y-%m-%d %H:%M:%S' for a datetime column")
    if spec.type != "datetime" and spec.format is not None:
        _fail(spec, "format", "unset for a column that is not a datetime")


def _check_fill(spec: ColumnSpec) -> None:
    if spec.missing != "constant":
        if spec.fill is not None:
            _fail(spec, "fill", "unset unless missing is constant")
        return
    if spec.type == "numeric" and not (_is_number(spec.fill) and math.isfinite(spec.fill)):
        _fail(spec, "fill", "a finite number with missing: constant")
    if spec.type == "categorical" and not (isinstance(spec.fill, str) and spec.fill.strip() == spec.fill != ""):
        _fail(spec, "fill", "a non-empty string without surrounding spaces with missing: constant")
    if spec.type == "datetime" and (not isinstance(spec.fill, str) or _seconds(spec.fill, spec.format) is None):
        _fail(spec, "fill", f"a date in the column's format {spec.format!r} with missing: constant")


def _kind(spec: ColumnSpec) -> str:
    """'categorical', or 'numeric' for the columns that become numbers (numeric, datetime)."""
    return "categorical" if spec.type == "categorical" else "numeric"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


# --- parsing --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Parsed:
    """One column of a partition parsed: float64 (NaN missing) or object (None missing) values,
    and the rows whose value did not parse, with what was wrong."""

    values: np.ndarray
    bad: np.ndarray
    details: np.ndarray

    @property
    def missing(self) -> np.ndarray:
        """Rows without a value (a bad value is not missing: its record is dropped)."""
        return pd.isna(self.values) & ~self.bad


def parse_columns(frame: pd.DataFrame, specs: Sequence[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`id` and each spec's column parsed, as `Parsed.values`; one row per value that did not
    parse, columns `PROBLEMS`, reason `unparseable:<name>`, the value in the detail)."""
    parsed = {spec.name: parse_column(frame, spec) for spec in specs}
    values = pd.DataFrame({"id": pd.Series(frame["id"].to_numpy(object), dtype=object),  # object: None, not NaN
                           **{n: pd.Series(p.values, dtype=p.values.dtype) for n, p in parsed.items()}})
    ids = frame["id"].to_numpy(object)
    problems = [pd.DataFrame({"id": ids[p.bad], "reason": f"unparseable:{n}", "detail": p.details[p.bad]})
                for n, p in parsed.items()]
    return values, pd.concat([pd.DataFrame(columns=PROBLEMS, dtype=object), *problems], ignore_index=True)


def parse_column(frame: pd.DataFrame, spec: Any) -> Parsed:
    """The raw values (strings, numbers, None) of `spec.name` in `frame`, parsed as `spec.type` says.

    Numeric and datetime strings are parsed a column at a time (`_texts_as_numbers`,
    `_texts_as_datetimes`); other values (a JSON number, a typed datetime) one at a time, as are the
    strings the vectorised datetime parser refuses, so a value parses the same whichever way it goes."""
    if spec.name not in frame.columns:
        present = ", ".join(map(str, frame.columns))
        raise ValueError(f"metadata column {spec.name!r} is not in the records (columns: {present})")
    raw = frame[spec.name].to_numpy(object)
    texts = np.fromiter((isinstance(value, str) for value in raw), dtype=bool, count=len(raw))
    dtype = object if spec.type == "categorical" else np.float64
    parse, vectorised = _parsers(spec)
    values, details = np.full(len(raw), None if dtype is object else np.nan, dtype=dtype), np.full(len(raw), None, dtype=object)
    others = np.flatnonzero(~texts)
    if len(others):
        one_by_one = _parsed_each(raw[others], parse, dtype)
        values[others], details[others] = one_by_one.values, one_by_one.details
    if len(others) < len(raw):
        values[texts], details[texts] = vectorised(raw[texts])
    return Parsed(values, pd.notna(details), details)


def _parsers(spec: Any) -> tuple[Callable, Callable]:
    """(the value-by-value parser, the parser of a column of strings) of `spec.type`."""
    if spec.type == "categorical":
        return _category, _texts_as_categories
    if spec.type == "numeric":
        return _number, _texts_as_numbers
    return _datetime(spec.format), functools.partial(_texts_as_datetimes, format=spec.format)


def _parsed_each(raw: np.ndarray, parse, dtype) -> Parsed:
    """`raw` parsed value by value (each distinct string once)."""
    memo: dict[object, tuple[object, str | None]] = {}
    results = [_memoised(parse, value, memo) for value in raw]
    details = np.array([detail for _, detail in results], dtype=object)
    values = np.array([np.nan if value is None and dtype is np.float64 else value for value, _ in results], dtype=dtype)
    return Parsed(values, pd.notna(details), details)


def _stripped(texts: np.ndarray) -> np.ndarray:
    """Each string with `str.strip()` (Python's whitespace, as a value-by-value parse strips it)."""
    return pd.Series(texts, dtype=object).str.strip().to_numpy(object)


def _texts_as_categories(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(stripped strings, None for blank; no problems): a category is any text."""
    stripped = _stripped(texts)
    return np.where(stripped == "", None, stripped), np.full(len(texts), None, dtype=object)


def _texts_as_numbers(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, details) of strings: stripped, blank is missing; a number is ASCII decimal
    (`NUMBER`: sign, digits, point, exponent), converted by Arrow (correctly rounded, as `float`),
    so `1_000`, non-ASCII digits, `nan` and `inf` do not parse, nor does a finite-looking value
    that overflows (`1e999`); -0 reads as 0."""
    trimmed = _utf8(_stripped(texts))
    well_formed = pc.match_substring_regex(trimmed, NUMBER).to_numpy(zero_copy_only=False)
    blank = pc.equal(trimmed, "").to_numpy(zero_copy_only=False)
    numbers = pc.cast(pc.if_else(pa.array(well_formed), trimmed, pa.scalar(None, pa.string())), pa.float64())
    values = numbers.to_numpy(zero_copy_only=False) + 0.0  # nulls become NaN; -0.0 becomes 0.0
    details = np.full(len(texts), None, dtype=object)
    for row in np.flatnonzero(~blank & ~well_formed):
        details[row] = f"not a number: {texts[row]!r}"
    for row in np.flatnonzero(well_formed & ~np.isfinite(values)):
        details[row] = f"not a finite number: {texts[row]!r}"
    values[pd.notna(details)] = np.nan
    return values, details


def _utf8(texts: np.ndarray) -> pa.Array:
    """`texts` as an Arrow string array; a string UTF-8 cannot hold (a lone surrogate, which a JSON
    escape can make) becomes one that no parser reads, so it is reported as not parsing."""
    try:
        return pa.array(texts, type=pa.string())
    except UnicodeEncodeError:
        return pa.array([t if _encodable(t) else "\x00" for t in texts], type=pa.string())


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _texts_as_datetimes(texts: np.ndarray, format: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 seconds since 1970, details) of strings read with `format`, exactly as Python's
    `strptime` (`_datetime`) reads each: pandas parses the column, and a string keeps pandas' moment
    only where it is canonical: for a format of numeric fields (`CANONICAL`), zero-padded and in
    range (a regular expression); for any other, that moment written back with `format`. Every other
    non-blank string (unpadded fields, a leap second, seven fraction digits, another offset) goes to
    strptime."""
    stripped = _stripped(texts)
    blank = stripped == ""
    canonical, values = _canonical_moments(stripped, blank, format)
    details = np.full(len(texts), None, dtype=object)
    redo = np.flatnonzero(~canonical & ~blank)
    if len(redo):
        again = _parsed_each(texts[redo], _datetime(format), np.float64)
        values[redo], details[redo] = again.values, again.details
    return values, details


def _canonical_pattern(format: str) -> str | None:
    """A regular expression of the strings `format` writes with zero-padded fields in range, for a
    format of only `CANONICAL` directives and literal text; None for any other format."""
    parts, at = ["^"], 0
    while at < len(format):
        if format[at] != "%":
            parts.append(re.escape(format[at]))
            at += 1
            continue
        field = CANONICAL.get(format[at:at + 2])
        if field is None:
            return None
        parts.append(field)
        at += 2
    return "".join(parts) + "$"


def _canonical_moments(stripped: np.ndarray, blank: np.ndarray, format: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose string is `format` applied to the moment pandas read, their seconds since 1970;
    NaN elsewhere)."""
    values, canonical = np.full(len(stripped), np.nan), np.zeros(len(stripped), dtype=bool)
    try:
        moments = pd.to_datetime(pd.Series(np.where(blank, None, stripped), dtype=object), format=format, errors="coerce",
                                 utc=True)
    except ValueError:  # a format pandas does not take: strptime reads every string
        return canonical, values
    read = np.flatnonzero(~np.asarray(moments.isna()))
    pattern = _canonical_pattern(format)
    if pattern is not None:  # zero-padded numbers in range: what both parsers read alike (no leap second, six-digit %f)
        shaped = pc.match_substring_regex(pa.array(stripped[read], type=pa.string()), pattern)
        canonical[read[shaped.to_numpy(zero_copy_only=False)]] = True
    else:
        written = moments.iloc[read].dt.strftime(format).to_numpy(object)
        canonical[read[written == stripped[read]]] = True
    ticks, (per_microsecond, microseconds_per_tick) = moments.array.asi8, TICKS[moments.dt.unit]
    values[canonical] = (ticks[canonical] // per_microsecond * microseconds_per_tick).astype(np.float64) / 1e6  # as timedelta
    return canonical, values


def _memoised(parse, value: object, memo: dict) -> tuple[object, str | None]:
    if not isinstance(value, str):
        return parse(value)
    if value not in memo:
        memo[value] = parse(value)
    return memo[value]


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _number(value: object) -> tuple[float | None, str | None]:
    """(the finite float, None), (None, None) if missing, or (None, what is wrong), for a value that
    is not a string (a JSON number; strings go through `_texts_as_numbers`)."""
    if _is_missing(value):
        return None, None
    if _is_number(value):
        number = float(value)
    else:
        return None, f"not a number: {value!r} ({type(value).__name__})"
    return (number + 0.0, None) if math.isfinite(number) else (None, f"not a finite number: {value!r}")  # -0.0 -> 0.0


def _category(value: object) -> tuple[str | None, None]:
    return (None, None) if _is_missing(value) else (str(value).strip(), None)


def _datetime(format: str):
    def parse(value: object) -> tuple[float | None, str | None]:
        if _is_missing(value):
            return None, None
        if isinstance(value, datetime):  # a reader that typed the column already (pandas Timestamp too)
            return _since_epoch(value.to_pydatetime() if isinstance(value, pd.Timestamp) else value), None
        seconds = _seconds(value, format) if isinstance(value, str) else None
        return (seconds, None) if seconds is not None else (None, f"not a date in {format!r}: {value!r}")
    return parse


def _seconds(text: str, format: str) -> float | None:
    """Seconds since 1970-01-01 of `text` read with `format` (UTC if it names a zone), or None."""
    try:
        moment = datetime.strptime(text.strip(), format)
    except ValueError:
        return None
    return _since_epoch(moment)


def _since_epoch(moment: datetime) -> float:
    return (moment - (EPOCH if moment.tzinfo is None else EPOCH_UTC)).total_seconds() + 0.0


# --- fitting --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tally:
    """A multiset of values: sorted distinct `values` (float64, or str as object) and their `counts`."""

    values: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, values: Iterable[object], counts: Iterable[int] | None = None, *, numeric: bool) -> Tally:
        """The tally of `values` (each counted once, or `counts` times), summing equal values."""
        values = np.asarray(list(values) if not isinstance(values, np.ndarray) else values,
                            dtype=np.float64 if numeric else object)
        counts = np.ones(len(values), np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        distinct, at = np.unique(values, return_inverse=True)
        summed = np.zeros(len(distinct), np.int64)
        np.add.at(summed, at, counts)
        return cls(distinct, summed)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def expanded(self) -> np.ndarray:
        """Every value as often as it was counted, sorted."""
        return np.repeat(self.values, self.counts)


@dataclass(frozen=True, slots=True)
class Partial:
    """What fitting needs from train partitions, per column: its parsed values counted, and how many
    were missing or did not parse; `merge_partials` sums any number of them exactly."""

    tallies: dict[str, Tally]
    missing: dict[str, int]
    unparseable: dict[str, int]


def partial_statistics(partition: pd.DataFrame, specs: Sequence[Any]) -> Partial:
    """The counts of one train partition (raw columns, as `parse_columns` takes them)."""
    parsed = {spec.name: (spec, parse_column(partition, spec)) for spec in specs}
    tallies = {name: Tally.of(p.values[~p.bad & ~p.missing], numeric=_kind(s) == "numeric")
               for name, (s, p) in parsed.items()}
    return Partial(tallies, {n: int(p.missing.sum()) for n, (_, p) in parsed.items()},
                   {n: int(p.bad.sum()) for n, (_, p) in parsed.items()})


def merge_partials(partials: Sequence[Partial]) -> Partial:
    """The sum of `partials`, in any order and grouping (a tree of merges gives the same)."""
    names = sorted({name for p in partials for name in p.tallies})
    tallies = {}
    for name in names:
        parts = [p.tallies[name] for p in partials if name in p.tallies]
        values = np.concatenate([t.values for t in parts])
        tallies[name] = Tally.of(values, np.concatenate([t.counts for t in parts]), numeric=values.dtype != object)
    return Partial(tallies, {n: sum(p.missing.get(n, 0) for p in partials) for n in names},
                   {n: sum(p.unparseable.get(n, 0) for p in partials) for n in names})


@dataclass(frozen=True, slots=True)
class FittedColumn:
    """A column's spec and what train taught it: `summary` describes the parsed train values (before
    any treatment); `low`/`high` bound outliers, `fill` replaces missing values, `(x - center) / scale`
    scales, `vocabulary` names the one-hot categories."""

    spec: ColumnSpec
    summary: dict[str, Any]
    low: float | None = None
    high: float | None = None
    fill: float | str | None = None
    center: float | None = None
    scale: float | None = None
    vocabulary: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Fitted:
    """Every column's fitted statistics, by name."""

    columns: tuple[FittedColumn, ...] = field(default_factory=tuple)


def fit(merged: Partial, specs: Sequence[Any]) -> Fitted:
    """Statistics of each spec's column from the merged train counts; raises ValueError for a column
    whose treatment needs train values it does not have."""
    checked = sorted((as_spec(spec) for spec in specs), key=lambda spec: spec.name)
    return Fitted(tuple(_fit_column(spec, merged) for spec in checked))


def _fit_column(spec: ColumnSpec, merged: Partial) -> FittedColumn:
    tally = merged.tallies.get(spec.name, Tally.of([], numeric=_kind(spec) == "numeric"))
    counts = {"count": tally.n, "missing": merged.missing.get(spec.name, 0),
              "unparseable": merged.unparseable.get(spec.name, 0)}
    if spec.type == "categorical":
        return _fit_categorical(spec, tally, counts)
    return _fit_numeric(spec, tally, counts)


def _fit_categorical(spec: ColumnSpec, tally: Tally, counts: dict[str, int]) -> FittedColumn:
    ranked = [str(v) for _, v in sorted(zip(-tally.counts, tally.values)) if v != OTHER]
    top = ranked[: spec.max_categories] if spec.max_categories is not None else ranked
    fill = ranked[0] if spec.missing == "most_frequent" and ranked else spec.fill
    if spec.missing == "most_frequent" and fill is None:
        raise MetadataError("most_frequent needs values, and the train split has none", key=f"metadata.{spec.name}.missing")
    vocabulary = tuple(sorted(set(top) | ({fill} if spec.missing == "constant" else set())))
    summary = {**counts, "distinct": len(tally.values), "most_frequent": ranked[0] if ranked else None}
    return FittedColumn(spec, summary, fill=fill, vocabulary=vocabulary)


def _fit_numeric(spec: ColumnSpec, tally: Tally, counts: dict[str, int]) -> FittedColumn:
    values = tally.expanded()
    summary = {**counts, **describe(values, spec.quantiles)}
    low, high = _bounds(spec, values)
    treated = _treated(spec, values, low, high)
    fill = _fill(spec, treated)
    scaled = np.sort(np.concatenate([treated, np.full(counts["missing"], fill if fill is not None else np.nan)]))
    center, scale = _center_and_scale(spec, scaled[~np.isnan(scaled)])
    return FittedColumn(spec, summary, low=low, high=high, fill=fill, center=center, scale=scale)


def describe(values: np.ndarray, quantiles: Sequence[float]) -> dict[str, float | None]:
    """Statistics of sorted values: mean, population std, min, max, quartiles, IQR, the `quantiles`
    (numpy 'linear'), most frequent (ties: smallest); all None for no values."""
    if len(values) == 0:
        return dict.fromkeys(DESCRIBED, None)
    q25, median, q75, q_low, q_high = np.quantile(values, [0.25, 0.5, 0.75, *quantiles], method="linear")
    stats = (np.mean(values), np.std(values), values[0], values[-1], q25, median, q75, q75 - q25, q_low, q_high,
             _mode(values))
    return {key: float(value) for key, value in zip(DESCRIBED, stats, strict=True)}


def _mode(values: np.ndarray) -> float:
    distinct, counts = np.unique(values, return_counts=True)
    return float(distinct[np.argmax(counts)])  # argmax takes the first, the smallest, of tied values


def _bounds(spec: ColumnSpec, values: np.ndarray) -> tuple[float | None, float | None]:
    """Outlier bounds. `clip` and `drop`: the train quantiles, interpolated ('linear'), so a bound
    may lie between two train values. `winsorise`: the train values nearest inside them (the smallest
    at or above the low quantile, the largest at or below the high one), so a moved value always
    takes a value train has; with no train value inside the band it falls back to the quantiles."""
    if spec.outliers == "none":
        return None, None
    if len(values) == 0:
        raise MetadataError(f"{spec.outliers} needs values, and the train split has none", key=f"metadata.{spec.name}.outliers")
    low, high = (float(q) for q in np.quantile(values, spec.quantiles, method="linear"))
    if spec.outliers != "winsorise":
        return low, high
    inside = values[(values >= low) & (values <= high)]
    return (float(inside[0]), float(inside[-1])) if len(inside) else (low, high)


def _treated(spec: ColumnSpec, values: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    """The train values after outlier treatment, sorted."""
    if spec.outliers == "drop":
        return values[(values >= low) & (values <= high)]
    if spec.outliers in ("clip", "winsorise"):
        return np.clip(values, low, high)
    return values


def _fill(spec: ColumnSpec, treated: np.ndarray) -> float | None:
    if spec.missing in ("keep", "drop"):
        return None
    if spec.missing == "constant":
        return _seconds(spec.fill, spec.format) if spec.type == "datetime" else float(spec.fill)
    if len(treated) == 0:
        raise MetadataError(f"{spec.missing} needs values, and the train split has none", key=f"metadata.{spec.name}.missing")
    return describe(treated, spec.quantiles)[spec.missing]  # mean, median or most_frequent


def _center_and_scale(spec: ColumnSpec, values: np.ndarray) -> tuple[float | None, float | None]:
    """(center, scale) of sorted values: standard (mean, population std), minmax (min, max - min),
    robust (median, IQR). A zero spread scales by 1, as scikit-learn does: a column constant in
    train becomes 0, and a val or test value its distance from that constant."""
    if spec.scale == "none":
        return None, None
    if len(values) == 0:
        raise MetadataError(f"{spec.scale} needs values, and the train split has none", key=f"metadata.{spec.name}.scale")
    stats = describe(values, spec.quantiles)
    center, spread = {"standard": ("mean", "std"), "minmax": ("min", None), "robust": ("median", "iqr")}[spec.scale]
    width = stats["max"] - stats["min"] if spread is None else stats[spread]
    return stats[center], width if width > 0 else 1.0


# --- applying -------------------------------------------------------------------------------

@dataclass(slots=True)
class _Column:
    """One column applied to a partition: feature columns, each row's drop reason (or None) and detail, counts."""

    features: dict[str, np.ndarray]
    reasons: np.ndarray
    details: np.ndarray
    counts: Counter[str]


def feature_names(fitted: Fitted) -> list[str]:
    """The feature columns `apply` writes, in order (after `id`)."""
    names = []
    for column in fitted.columns:
        spec = column.spec
        categorical = spec.type == "categorical"
        names += [f"{spec.name}={c}" for c in (*column.vocabulary, OTHER)] if categorical else [spec.name]
        names += [f"{spec.name}{INDICATOR}"] if spec.missing_indicator else []
    return names


def apply(frame: pd.DataFrame, fitted: Fitted) -> Processed:
    """One partition (`id` and the raw columns) prepared as train taught: `records` holds `id` and
    `feature_names(fitted)` for every record kept, in input order (each row depends on its own values
    alone, so row order and partitioning change nothing); `fates` drops each other record once, for
    its first reason (columns by name); `counts` has `<name>:<what>` per column, counting values over
    every row of the partition (a record with two bad values counts in both columns): missing, imputed,
    dropped_missing, unparseable, clipped_low, clipped_high, dropped_outlier, other."""
    done = [_apply_column(column, parse_column(frame, column.spec)) for column in fitted.columns]
    reasons, details = _first_reasons(done, len(frame))
    keep = pd.isna(reasons)
    ids = frame["id"].to_numpy(object)
    features = pd.DataFrame({"id": pd.Series(ids[keep], dtype=object),  # object whether empty or not
                             **{n: v[keep] for c in done for n, v in c.features.items()}})
    counts = sum((c.counts for c in done), Counter())
    return Processed(features, Fates.dropped(ids[~keep], reasons[~keep], details[~keep]), counts)


def _first_reasons(done: list[_Column], n: int) -> tuple[np.ndarray, np.ndarray]:
    reasons, details = np.full(n, None, dtype=object), np.full(n, None, dtype=object)
    for column in done:
        first = pd.isna(reasons) & ~pd.isna(column.reasons)
        reasons[first], details[first] = column.reasons[first], column.details[first]
    return reasons, details


def _apply_column(column: FittedColumn, parsed: Parsed) -> _Column:
    name, missing = column.spec.name, parsed.missing
    reasons, details = np.full(len(missing), None, dtype=object), parsed.details.copy()
    reasons[parsed.bad] = f"unparseable:{name}"
    if column.spec.missing == "drop":
        reasons[missing] = f"missing:{name}"
    counts = Counter({"missing": int(missing.sum()), "unparseable": int(parsed.bad.sum()),
                      "dropped_missing": int(missing.sum()) if column.spec.missing == "drop" else 0,
                      "imputed": int(missing.sum()) if column.fill is not None else 0})
    apply_kind = _apply_categorical if column.spec.type == "categorical" else _apply_numeric
    features = apply_kind(column, parsed.values, missing, reasons, details, counts)
    if column.spec.missing_indicator:
        features[f"{name}{INDICATOR}"] = missing.astype(np.int8)
    return _Column(features, reasons, details, Counter({f"{name}:{k}": v for k, v in sorted(counts.items())}))


def _apply_numeric(column: FittedColumn, values: np.ndarray, missing: np.ndarray, reasons: np.ndarray,
                   details: np.ndarray, counts: Counter[str]) -> dict[str, np.ndarray]:
    """Outliers, imputation, scaling of float values (NaN missing); outlier drops go into `reasons`."""
    x = values.copy()
    if column.spec.outliers != "none":
        below, above = x < column.low, x > column.high
        if column.spec.outliers == "drop":
            reasons[below | above] = f"outlier:{column.spec.name}"
            details[below] = [f"{float(v)!r} < {column.low!r}" for v in x[below]]
            details[above] = [f"{float(v)!r} > {column.high!r}" for v in x[above]]
            counts["dropped_outlier"] = int((below | above).sum())
        else:
            x = np.clip(x, column.low, column.high)
            counts["clipped_low"], counts["clipped_high"] = int(below.sum()), int(above.sum())
    if column.fill is not None:
        x[missing] = column.fill
    if column.scale is not None:
        x = (x - column.center) / column.scale
    return {column.spec.name: x.astype(np.float64)}


def _apply_categorical(column: FittedColumn, values: np.ndarray, missing: np.ndarray, reasons: np.ndarray,
                       details: np.ndarray, counts: Counter[str]) -> dict[str, np.ndarray]:
    """One-hot int8 columns in vocabulary order, then `<name>=__other__`; a kept missing value has none."""
    filled = np.where(missing, column.fill, values) if column.fill is not None else values
    known = pd.Series(filled, dtype=object).isin(column.vocabulary).to_numpy()
    other = ~known & ~pd.isna(filled)
    counts["other"] = int(other.sum())
    onehot = {f"{column.spec.name}={c}": (filled == c).astype(np.int8) for c in column.vocabulary}
    return {**onehot, f"{column.spec.name}={OTHER}": other.astype(np.int8)}


# --- export ---------------------------------------------------------------------------------

def to_json(fitted: Fitted) -> str:
    """The fitted statistics as canonical JSON: sorted keys, floats written as repr (they read back
    exactly), columns by name; what a served model needs to prepare its inputs as training did."""
    columns = [_column_json(c) for c in fitted.columns]
    return json.dumps({"version": FORMAT_VERSION, "columns": columns}, sort_keys=True, allow_nan=False, indent=1) + "\n"


def from_json(text: str) -> Fitted:
    """The `Fitted` that `to_json` wrote."""
    data = json.loads(text)
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"fitted metadata version {data.get('version')!r}; this code reads version {FORMAT_VERSION}")
    return Fitted(tuple(_column_from_json(c) for c in data["columns"]))


def _column_json(column: FittedColumn) -> dict[str, Any]:
    spec = {key: getattr(column.spec, key) for key in SPEC_KEYS}
    spec["quantiles"] = [float(q) for q in spec["quantiles"]]
    plain = {key: _plain(getattr(column, key)) for key in ("low", "high", "fill", "center", "scale")}
    return {"spec": spec, "summary": {k: _plain(v) for k, v in column.summary.items()},
            "vocabulary": list(column.vocabulary), **plain}


def _column_from_json(data: dict[str, Any]) -> FittedColumn:
    spec = ColumnSpec(**{**data["spec"], "quantiles": tuple(data["spec"]["quantiles"])})
    return FittedColumn(spec, data["summary"], low=data["low"], high=data["high"], fill=data["fill"],
                        center=data["center"], scale=data["scale"], vocabulary=tuple(data["vocabulary"]))


def _plain(value: object) -> object:
    """JSON-ready: numpy floats as Python floats, ints and strings as they are."""
    if isinstance(value, (float, np.floating)):
        return float(value)
    return int(value) if isinstance(value, np.integer) else value


# --- feature selection ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Selection:
    """The feature columns kept, in their order, and `scores`: per feature column its `variance`,
    `mutual_information` (NaN where not scored) and whether it is `kept`."""

    kept: list[str]
    scores: pd.DataFrame


def select_features(features: pd.DataFrame, labels: Sequence[object], *, min_variance: float | None = None,
                    mutual_information_top: int | None = None, seed: int) -> Selection:
    """Feature columns of train (`apply`'s records; `labels` one per row) that vary more than
    `min_variance` (scikit-learn's VarianceThreshold: population variance, and at 0 any spread at all),
    then the `mutual_information_top` of those by mutual information with the label (ties: column
    order). Rows are taken in id order and the estimator seeded, so the result never depends on row order."""
    order = np.argsort(features["id"].to_numpy(object).astype(str), kind="stable")
    names = [c for c in features.columns if c != "id"]
    x = features[names].to_numpy(np.float64)[order]
    y = np.asarray(labels, dtype=object)[order].astype(str)
    variance = _variances(x, min_variance or 0.0)
    kept = variance > min_variance if min_variance is not None else np.ones(len(names), bool)
    information = np.full(len(names), np.nan)
    if mutual_information_top is not None and kept.any():
        information[kept] = _mutual_information(x[:, kept], y, [n for n, k in zip(names, kept) if k], seed)
        ranked = sorted(np.flatnonzero(kept), key=lambda i: (-information[i], i))[:mutual_information_top]
        kept = np.isin(np.arange(len(names)), ranked)
    scores = pd.DataFrame({"column": names, "variance": variance, "mutual_information": information, "kept": kept})
    return Selection([n for n, k in zip(names, kept) if k], scores)


def _variances(x: np.ndarray, threshold: float) -> np.ndarray:
    """VarianceThreshold's variances: NaN ignored; at threshold 0 the peak-to-peak where smaller,
    so a constant column is exactly 0 despite rounding."""
    with np.errstate(all="ignore"):
        variance = np.nanvar(x, axis=0) if len(x) else np.full(x.shape[1], np.nan)
        if threshold == 0 and len(x):
            variance = np.nanmin([variance, np.nanmax(x, axis=0) - np.nanmin(x, axis=0)], axis=0)
    return variance


def _mutual_information(x: np.ndarray, y: np.ndarray, names: list[str], seed: int) -> np.ndarray:
    from sklearn.feature_selection import mutual_info_classif

    if np.isnan(x).any():
        bad = [n for n, col in zip(names, np.isnan(x).any(axis=0)) if col]
        raise ValueError(f"mutual information needs values in every row; missing in {', '.join(bad)} "
                         "(impute them: missing other than keep)")
    discrete = np.all((x == 0) | (x == 1), axis=0)
    return mutual_info_classif(x, y, discrete_features=discrete, random_state=seed)


# --- record filters (clean) -------------------------------------------------------------------

def metadata_frame(ids: Sequence[str], metadata: Sequence[str | None], names: Sequence[str]) -> pd.DataFrame:
    """`id` and one column per name with the raw values of the records' `metadata` JSON (None where absent)."""
    values = [json.loads(m) if isinstance(m, str) else {} for m in metadata]
    return pd.DataFrame({"id": pd.Series(list(ids), dtype=object),
                         **{name: pd.Series([v.get(name) for v in values], dtype=object) for name in names}})


def filter_records(frame: pd.DataFrame, filters: Sequence[Any], columns: Mapping[str, Any]) -> tuple[np.ndarray, Fates]:
    """Which records of `frame` (`metadata_frame`) pass every filter (`column`, `min`, `max`,
    `values`), and a drop for each that does not: reason `filtered:<column>` (the first filter it
    fails), detail the value and the bound. A missing or unparseable value fails the filter."""
    keep = np.ones(len(frame), dtype=bool)
    ids, reasons, details = [], [], []
    for rule in filters:
        spec = spec_of(rule.column, columns[rule.column])
        failed, why = _failing(parse_column(frame, spec), rule, spec, frame[rule.column].to_numpy(object))
        newly = failed & keep
        ids += frame["id"].to_numpy(object)[newly].tolist()
        reasons += [f"filtered:{rule.column}"] * int(newly.sum())
        details += why[newly].tolist()
        keep &= ~failed
    return keep, Fates.dropped(ids, reasons, details)


def spec_of(name: str, column: Any) -> ColumnSpec:
    """The ColumnSpec of the params model `column` (a `MetadataColumn`) named `name`."""
    options = column.model_dump() if hasattr(column, "model_dump") else {k: getattr(column, k) for k in SPEC_KEYS[1:]}
    return ColumnSpec(name, **{k: (tuple(v) if k == "quantiles" else v) for k, v in options.items() if k in SPEC_KEYS})


def _failing(parsed: Parsed, rule: Any, spec: ColumnSpec, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows failing `rule`, and why (for every row; only the failing ones are read): a number as
    parsed, a date as written."""
    values = parsed.values
    why = np.where(parsed.bad, parsed.details, np.where(parsed.missing, f"{spec.name} missing", None)).astype(object)
    failed = parsed.bad | parsed.missing
    if rule.values is not None:
        outside = ~failed & ~pd.Series(values, dtype=object).isin(rule.values).to_numpy()
        why[outside] = [f"{spec.name} {v!r} not in {list(rule.values)}" for v in values[outside]]
        return failed | outside, why
    for bound, below in ((rule.min, True), (rule.max, False)):
        if bound is None:
            continue
        limit = _bound(bound, spec)
        with np.errstate(invalid="ignore"):
            beyond = ~failed & ((values < limit) if below else (values > limit))
        written = raw[beyond] if spec.type == "datetime" else [f"{v:g}" for v in values[beyond]]
        shown = [f"{spec.name} {v} {'<' if below else '>'} {bound}" for v in written]
        why[beyond] = shown
        failed = failed | beyond
    return failed, why


def _bound(bound: float | str, spec: ColumnSpec) -> float:
    """A filter bound as the column's numbers (a datetime bound is read with the column's format)."""
    if spec.type == "datetime":
        seconds = _seconds(str(bound), spec.format)
        if seconds is None:
            raise ValueError(f"filter on {spec.name!r}: {bound!r} is not a date in {spec.format!r}")
        return seconds
    if isinstance(bound, str):
        raise ValueError(f"filter on {spec.name!r}: {bound!r} is not a number")
    return float(bound)


# --- on the engine: partials as rows, records prepared ----------------------------------------

PARTIAL_COLUMNS = ["column", "what", "number", "category", "n"]  # what: value | missing | unparseable


def partial_rows(records: pd.DataFrame, specs: Sequence[Any]) -> pd.DataFrame:
    """`partial_statistics` of a partition of records (their `metadata` JSON) as rows the engine can
    sum exactly by (column, what, number, category): a numeric value in `number` (category ""), a
    category in `category` (number 0), missing and unparseable counts with neither."""
    frame = metadata_frame(records["id"], records["metadata"], [spec.name for spec in specs])
    partial = partial_statistics(frame, specs)
    rows = []
    for name, tally in partial.tallies.items():
        numeric = tally.values.dtype != object
        rows += [(name, "value", float(v) if numeric else 0.0, "" if numeric else str(v), int(n))
                 for v, n in zip(tally.values, tally.counts, strict=True)]
    rows += [(name, what, 0.0, "", int(n)) for what, counts in (("missing", partial.missing), ("unparseable", partial.unparseable))
             for name, n in counts.items()]
    return pd.DataFrame(rows, columns=PARTIAL_COLUMNS).astype({"number": np.float64, "n": np.int64})


def partial_from_rows(rows: pd.DataFrame, specs: Sequence[Any]) -> Partial:
    """The merged `Partial` of summed `partial_rows`."""
    tallies, missing, unparseable = {}, {}, {}
    for spec in specs:
        mine = rows[rows["column"] == spec.name]
        values = mine[mine["what"] == "value"]
        numeric = _kind(spec) == "numeric"
        tallies[spec.name] = Tally.of(values["number"].to_numpy(np.float64) if numeric else values["category"].to_numpy(object),
                                      values["n"].to_numpy(np.int64), numeric=numeric)
        missing[spec.name] = int(mine.loc[mine["what"] == "missing", "n"].sum())
        unparseable[spec.name] = int(mine.loc[mine["what"] == "unparseable", "n"].sum())
    return Partial(tallies, missing, unparseable)


def prepare_records(records: pd.DataFrame, fitted: Fitted) -> Processed:
    """One partition of records as `apply` judges their metadata: the records it keeps (unchanged),
    the fates of the others, and its counts."""
    frame = metadata_frame(records["id"], records["metadata"], [c.spec.name for c in fitted.columns])
    done = apply(frame, fitted)
    return Processed(records[records["id"].isin(set(done.records["id"]))], done.fates, done.counts)


def record_features(records: pd.DataFrame, fitted: Fitted) -> pd.DataFrame:
    """`id` and the prepared feature columns of records that `prepare_records` kept."""
    frame = metadata_frame(records["id"], records["metadata"], [c.spec.name for c in fitted.columns])
    return apply(frame, fitted).records


def root_features(records: pd.DataFrame, features: pd.DataFrame, *, source: str = "the prepared features") -> pd.DataFrame:
    """The prepared features of `records` (`id`, `parent_id`), in their order, each under its own id:
    an original's row, and for a generated record (augmented variant, oversampled copy) the row of
    its root, the original it names as `parent_id`. `features` is prepare's table indexed by id.

    A root without a row means the records do not come from those prepare wrote (a bug, or inputs
    of two runs): a StageError names the first such record rather than a row of NaN."""
    roots = records["parent_id"].where(records["parent_id"].notna(), records["id"])
    at = features.index.get_indexer(roots)
    if (at < 0).any():
        missing = np.flatnonzero(at < 0)
        first = int(missing[0])
        raise StageError(f"{source} has no row for record {roots.iloc[first]!r}, the root of record {records['id'].iloc[first]!r} "
                         f"({len(missing)} record(s) of this partition without one): the records do not come from those the "
                         "prepare stage wrote; rerun prepare and the stages after it")
    rows = features.iloc[at].reset_index(drop=True)
    rows.insert(0, "id", records["id"].to_numpy(object))
    return rows
