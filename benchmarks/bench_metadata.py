"""Benchmark metadata preparation (fit on train, apply to every split) against scikit-learn; prints one table.

    .venv/bin/python benchmarks/bench_metadata.py [--sizes 100000,1000000] [--partitions 8]
        [--repeats 3] [--seed 0] [--train-unparseable]

Corpus, generated per size from `rng(seed, "bench_metadata", size, ...)` (no downloads): an `id`
and five raw string columns as a CSV reader gives them (`csv` module: every value a string),
rows split 80/10/10 into train, val and test at random:

* amount: lognormal money with 2 decimals; numeric, missing `mean`, outliers `winsorise` to the
  train values nearest inside the quantiles (0.01, 0.99), scale `standard`;
* replies: Poisson(3) counts; numeric, missing `median` with a missing indicator, outliers `clip`
  to the train quantiles (0.01, 0.99), scale `robust`;
* score: normal(50, 10) with 3 decimals; numeric, missing `constant` 0, outliers `clip`
  (0.005, 0.995), scale `minmax`;
* channel: 12 names of Zipf popularity; categorical, missing
  `most_frequent`, `max_categories` 5;
* created: a second in 2020-2023, `%Y-%m-%d %H:%M:%S`; datetime, missing `keep`, scale `standard`.

Planted at random rows of every split: 1% blanks per column ("", spaces, None), 0.2% outliers in
each numeric column (amount x1000 or negated, replies 5000 / 250 / -7, score +-1e4), 1% channels
with spaces around; in val and test only, n / 1000 unparseable values per column (about 1% of
those splits: "12,50", "n/a", "?", "2021-02-30 10:00:00", "yesterday", ...) and as many channels
train never saw.

Two preparations of the same corpus, both from the raw strings (parsing timed in both):

* ours: `pipeline.steps.metadata`: `partial_statistics` of each of `--partitions` pieces of
  train, one after the other in this process, `merge_partials`, `fit`; then `apply` to train, val
  and test;
* sklearn: a `ColumnTransformer` of one `Pipeline` per column, fitted on train as one frame, then
  `transform` of each split: `FunctionTransformer` parsing with `pd.to_numeric` /
  `pd.to_datetime(format=...)` (`errors="coerce"`, categories stripped, blanks NaN),
  `QuantileClip` (below: `np.nanquantile` on train; for winsorise snapped to the train values
  nearest inside, which is what ours means by it), `SimpleImputer(strategy=...)`,
  `StandardScaler` / `RobustScaler` / `MinMaxScaler`, `OneHotEncoder(handle_unknown=
  "infrequent_if_exist", max_categories=6)` (scikit-learn counts the infrequent column in
  `max_categories`, ours does not) and a `MissingIndicator` of its own for replies. Outliers are
  clipped before imputing, as ours does (scikit-learn's usual order is the reverse).

Semantics that differ, so the check compares only like for like: ours drops a record with a
value that does not parse, where `to_numeric(errors="coerce")` makes it NaN, which is then
imputed (and marked by the indicator); test is compared on the rows ours keeps, and unparseable
values are planted in val and test only by default, since in train such a value is left out of
ours' statistics but is imputed, and so weighs on the scaler, in scikit-learn's. With
`--train-unparseable` they are planted in train too, and the table shows what that changes
(amount, imputed and standard-scaled, then differs, and the script exits 1).

Per size and method: fit and transform seconds of the run with the best total (of `--repeats`,
measure.py's `timed`, after a small warm-up of both), the total over ours, and the peak memory
one more, untimed run allocated (tracemalloc: Python objects and numpy buffers on top of the
corpus; RSS is not used, as the allocator keeps freed pages between runs). For sklearn: the
largest absolute difference from ours per numeric column on the test rows ours keeps (NaN
where both are NaN counts as equal; `nan!` where only one is) and the one-hot and indicator
cells that differ. For ours: whether `to_json` of the fit on 1 piece and on `--partitions`
pieces are the same bytes. Below the table, per size: rows ours dropped, the vocabularies.
Deterministic for a seed, timings aside. Exits 0; 1 where the bytes differ, a numeric difference
exceeds 1e-9 or a cell differs. The default sizes take about 4 minutes on 2 busy cores.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    RobustScaler,
    StandardScaler,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from measure import timed, traced

from pipeline.seeding import rng
from pipeline.steps.metadata import (
    INDICATOR,
    Fitted,
    apply,
    feature_names,
    fit,
    merge_partials,
    partial_statistics,
    specs_from_mapping,
    to_json,
)

FORMAT = "%Y-%m-%d %H:%M:%S"
METADATA = {
    "amount": {"type": "numeric", "missing": "mean", "outliers": "winsorise", "quantiles": [0.01, 0.99],
               "scale": "standard"},
    "replies": {"type": "numeric", "missing": "median", "missing_indicator": True, "outliers": "clip",
                "quantiles": [0.01, 0.99], "scale": "robust"},
    "score": {"type": "numeric", "missing": "constant", "fill": 0.0, "outliers": "clip", "quantiles": [0.005, 0.995],
              "scale": "minmax"},
    "channel": {"type": "categorical", "missing": "most_frequent", "max_categories": 5},
    "created": {"type": "datetime", "format": FORMAT, "missing": "keep", "scale": "standard"},
}
SPECS = specs_from_mapping(METADATA)
CHANNELS = ["web", "mail", "phone", "chat", "app", "shop", "fax", "partner", "kiosk", "post", "radio", "print"]
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}
BLANKS = ["", "  ", None]
UNPARSEABLE = {"amount": ["12,50", "n/a", "?"], "replies": ["three", "2.5.1", "-"], "score": ["n/a", "1e", "--"],
               "created": ["2021-02-30 10:00:00", "yesterday", "2021/03/01"]}
TOLERANCE = 1e-9


# --- corpus ---------------------------------------------------------------------------------

def strings(values: np.ndarray) -> np.ndarray:
    """Numbers as the shortest strings that read back to them, as Python str objects."""
    return values.astype(str).astype(object)


def raw_columns(n: int, seed: int) -> dict[str, np.ndarray]:
    """The clean values of every column, as strings."""
    def gen(name: str) -> np.random.Generator:
        return rng(seed, "bench_metadata", n, name)

    weights = 1.0 / np.arange(1, len(CHANNELS) + 1) ** 1.1
    seconds = gen("created").integers(1_577_836_800, 1_704_067_200, n).astype("datetime64[s]")
    return {
        "amount": strings(np.round(gen("amount").lognormal(3.0, 1.0, n), 2)),
        "replies": strings(gen("replies").poisson(3.0, n)),
        "score": strings(np.round(gen("score").normal(50.0, 10.0, n), 3)),
        "channel": np.array(CHANNELS, dtype=object)[gen("channel").choice(len(CHANNELS), n, p=weights / weights.sum())],
        "created": np.char.replace(seconds.astype(str), "T", " ").astype(object),
    }


def outliers(name: str, values: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Far values for `values` (strings) of numeric column `name`."""
    if name == "replies":
        return gen.choice(np.array(["5000", "-7", "250"], dtype=object), len(values))
    if name == "score":
        return gen.choice(np.array(["10000.0", "-10000.0"], dtype=object), len(values))
    numbers = values.astype(np.float64) * gen.choice([1000.0, -1.0], len(values))
    return strings(np.round(numbers, 2))


def plant(columns: dict[str, np.ndarray], held_out: np.ndarray, n: int, seed: int, *, train_unparseable: bool) -> None:
    """Blanks and outliers anywhere; unparseable values and unseen channels in `held_out` rows (or anywhere)."""
    for name, values in columns.items():
        gen = rng(seed, "bench_metadata", n, name, "plant")
        rows = gen.choice(n, size=3 * (n // 100), replace=False)
        blank, far, spaced = np.array_split(rows, 3)
        values[blank] = gen.choice(np.array(BLANKS, dtype=object), len(blank))
        if name in ("amount", "replies", "score"):
            values[far[: len(far) // 5]] = outliers(name, values[far[: len(far) // 5]], gen)
        elif name == "channel":
            values[spaced] = [f" {v} " for v in values[spaced]]
        pool = np.arange(n) if train_unparseable else held_out
        bad = gen.choice(pool, size=max(1, n // 1000), replace=False)
        wrong = UNPARSEABLE.get(name, ["pigeon", "carrier pigeon"])
        values[bad] = gen.choice(np.array(wrong, dtype=object), len(bad))


def make_corpus(n: int, seed: int, *, train_unparseable: bool = False) -> dict[str, pd.DataFrame]:
    """Train, val and test frames of `id` and the raw columns."""
    columns = raw_columns(n, seed)
    order = rng(seed, "bench_metadata", n, "split").permutation(n)
    ends = np.cumsum([round(share * n) for share in SPLITS.values()])
    ends[-1] = n
    parts = dict(zip(SPLITS, np.split(order, ends[:-1]), strict=True))
    plant(columns, np.concatenate([parts["val"], parts["test"]]), n, seed, train_unparseable=train_unparseable)
    frame = pd.DataFrame({"id": np.array([f"r{i:07d}" for i in range(n)], dtype=object), **columns})
    return {split: frame.iloc[np.sort(rows)].reset_index(drop=True) for split, rows in parts.items()}


# --- ours -----------------------------------------------------------------------------------

def pieces(frame: pd.DataFrame, partitions: int) -> list[pd.DataFrame]:
    return [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), partitions)]


def fit_ours(train: pd.DataFrame, partitions: int) -> Fitted:
    partials = [partial_statistics(piece, SPECS) for piece in pieces(train, partitions)]
    return fit(merge_partials(partials), SPECS)


def apply_ours(splits: dict[str, pd.DataFrame], fitted: Fitted) -> dict[str, pd.DataFrame]:
    return {name: apply(frame, fitted).records for name, frame in splits.items()}


# --- scikit-learn ---------------------------------------------------------------------------

class QuantileClip(TransformerMixin, BaseEstimator):
    """Clip each column to its train quantiles (NaN ignored, kept); `nearest_inside`: to the train
    values nearest inside them (winsorising to values train has)."""

    def __init__(self, quantiles: tuple[float, float] = (0.01, 0.99), nearest_inside: bool = False):
        self.quantiles = quantiles
        self.nearest_inside = nearest_inside

    def fit(self, X: Any, y: Any = None) -> QuantileClip:
        x = np.asarray(X, dtype=np.float64)
        low, high = np.nanquantile(x, self.quantiles, axis=0, method="linear")
        if self.nearest_inside:
            inside = (x >= low) & (x <= high)
            low = np.nanmin(np.where(inside, x, np.nan), axis=0)
            high = np.nanmax(np.where(inside, x, np.nan), axis=0)
        self.low_, self.high_ = low, high
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.clip(np.asarray(X, dtype=np.float64), self.low_, self.high_)


def parse_numbers(frame: pd.DataFrame) -> np.ndarray:
    return frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)


def parse_dates(frame: pd.DataFrame) -> np.ndarray:
    def seconds(column: pd.Series) -> pd.Series:
        return (pd.to_datetime(column, format=FORMAT, errors="coerce") - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
    return frame.apply(seconds).to_numpy(np.float64)


def parse_categories(frame: pd.DataFrame) -> np.ndarray:
    stripped = frame.apply(lambda column: column.str.strip())
    return stripped.where(stripped.notna() & (stripped != ""), np.nan).to_numpy(object)


def numeric_pipeline(clip: QuantileClip, imputer: SimpleImputer | None, scaler: Any) -> Pipeline:
    steps = [("parse", FunctionTransformer(parse_numbers)), ("clip", clip), ("impute", imputer), ("scale", scaler)]
    return Pipeline([step for step in steps if step[1] is not None])


def sklearn_transformer() -> ColumnTransformer:
    """The spec of every column written as a scikit-learn user would, columns in ours' feature order."""
    def quantiles(name: str) -> tuple[float, float]:
        return tuple(METADATA[name]["quantiles"])

    channel = Pipeline([("parse", FunctionTransformer(parse_categories)), ("impute", SimpleImputer(strategy="most_frequent")),
                        ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=6, sparse_output=False))])
    created = Pipeline([("parse", FunctionTransformer(parse_dates)), ("scale", StandardScaler())])
    return ColumnTransformer([
        ("amount", numeric_pipeline(QuantileClip(quantiles("amount"), nearest_inside=True), SimpleImputer(strategy="mean"),
                                    StandardScaler()), ["amount"]),
        ("channel", channel, ["channel"]),
        ("created", created, ["created"]),
        ("replies", numeric_pipeline(QuantileClip(quantiles("replies")), SimpleImputer(strategy="median"), RobustScaler()),
         ["replies"]),
        ("replies_missing", Pipeline([("parse", FunctionTransformer(parse_numbers)), ("flag", MissingIndicator(features="all"))]),
         ["replies"]),
        ("score", numeric_pipeline(QuantileClip(quantiles("score")), SimpleImputer(strategy="constant", fill_value=0.0),
                                   MinMaxScaler()), ["score"]),
    ])


def fit_sklearn(train: pd.DataFrame, partitions: int) -> ColumnTransformer:
    return sklearn_transformer().fit(train)


def apply_sklearn(splits: dict[str, pd.DataFrame], fitted: ColumnTransformer) -> dict[str, np.ndarray]:
    return {name: np.asarray(fitted.transform(frame), dtype=np.float64) for name, frame in splits.items()}


METHODS = {"ours": (fit_ours, apply_ours), "sklearn": (fit_sklearn, apply_sklearn)}


# --- runs -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Run:
    """One method at one size: what it fitted and produced, its best timings and its peak allocation."""

    method: str
    fitted: Any
    outputs: dict[str, Any]
    fit_seconds: float
    apply_seconds: float
    peak_mib: float = 0.0

    @property
    def seconds(self) -> float:
        return self.fit_seconds + self.apply_seconds


def run_once(method: str, splits: dict[str, pd.DataFrame], partitions: int) -> Run:
    fit_method, apply_method = METHODS[method]
    fitted, fit_seconds, _ = timed(lambda: fit_method(splits["train"], partitions))
    outputs, apply_seconds, _ = timed(lambda: apply_method(splits, fitted))
    return Run(method, fitted, outputs, fit_seconds, apply_seconds)


def run_method(method: str, splits: dict[str, pd.DataFrame], partitions: int, repeats: int) -> Run:
    """The best of `repeats` timed runs, with the peak allocation of one more, untimed run."""
    best = min((run_once(method, splits, partitions) for _ in range(repeats)), key=lambda run: run.seconds)
    _, best.peak_mib = traced(lambda: run_once(method, splits, partitions))
    return best


def warm_up(seed: int, partitions: int) -> None:
    """Both methods once on a small corpus, so imports and first-call costs are not timed."""
    splits = make_corpus(2_000, seed)
    for method in METHODS:
        run_once(method, splits, partitions)


# --- checks ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Check:
    """How sklearn's test features differ from ours on the rows ours keeps."""

    numeric: dict[str, float]  # largest |difference| per numeric column; inf where only one is NaN
    cells: int  # one-hot and indicator cells that differ
    shape_note: str = ""


def compare(ours: Run, sklearn: Run, test: pd.DataFrame) -> Check:
    names = feature_names(ours.fitted)
    kept = ours.outputs["test"]
    theirs = sklearn.outputs["test"][pd.Index(test["id"]).get_indexer(kept["id"])]
    if theirs.shape[1] != len(names):
        return Check({}, 0, f"sklearn has {theirs.shape[1]} feature columns, ours {len(names)}")
    numeric, cells = {}, 0
    for k, name in enumerate(names):
        mine, other = kept[name].to_numpy(np.float64), theirs[:, k]
        if "=" in name or name.endswith(INDICATOR):
            cells += int((mine != other).sum())
            continue
        one_nan = np.isnan(mine) != np.isnan(other)
        both = ~np.isnan(mine) & ~np.isnan(other)
        numeric[name] = np.inf if one_nan.any() else float(np.max(np.abs(mine[both] - other[both]), initial=0.0))
    return Check(numeric, cells)


def same_bytes(splits: dict[str, pd.DataFrame], fitted: Fitted) -> bool:
    """Whether the fit on train as one piece is the same bytes as `fitted` (on --partitions pieces)."""
    return to_json(fit_ours(splits["train"], 1)) == to_json(fitted)


def vocabularies(ours: Run, sklearn: Run) -> str:
    column = next(c for c in ours.fitted.columns if c.spec.name == "channel")
    encoder = sklearn.fitted.named_transformers_["channel"].named_steps["encode"]
    infrequent = set(encoder.infrequent_categories_[0] if encoder.infrequent_categories_[0] is not None else [])
    frequent = [c for c in encoder.categories_[0] if c not in infrequent]
    return f"channel vocabulary: ours {list(column.vocabulary)} + __other__, sklearn {frequent} + infrequent"


# --- report ---------------------------------------------------------------------------------

HEAD = ["rows", "method", "fit s", "transform s", "total s", "x ours", "peak MiB",
        "test max abs diff vs ours (numeric)", "one-hot / indicator cells differing", "fit on 1 vs P pieces"]


def differences(check: Check) -> str:
    if check.shape_note:
        return check.shape_note
    return ", ".join(f"{name} {'nan!' if np.isinf(d) else 0 if d == 0 else f'{d:.1e}'}" for name, d in check.numeric.items())


def rows(n: int, runs: list[Run], check: Check, identical: bool, partitions: int) -> list[str]:
    ours, lines = runs[0], []
    for run in runs:
        mine = run is ours
        cells = [f"{n:,}", run.method, f"{run.fit_seconds:.2f}", f"{run.apply_seconds:.2f}", f"{run.seconds:.2f}",
                 f"{run.seconds / ours.seconds:.2f}", f"{run.peak_mib:,.0f}", "-" if mine else differences(check),
                 "-" if mine else f"{check.cells:,}",
                 (f"same bytes (1 vs {partitions})" if identical else f"DIFFERENT (1 vs {partitions})") if mine else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def notes(n: int, splits: dict[str, pd.DataFrame], runs: list[Run]) -> list[str]:
    ours, sklearn = runs
    kept = {name: len(ours.outputs[name]) for name in splits}
    dropped = ", ".join(f"{name} {len(frame) - kept[name]:,} of {len(frame):,}" for name, frame in splits.items())
    imputed = (f"{n:,}: ours dropped records with an unparseable value: {dropped} (sklearn imputes those; "
               f"compared on the {kept['test']:,} test rows ours keeps)")
    return [imputed, f"{n:,}: {vocabularies(ours, sklearn)}"]


def failed(check: Check, identical: bool) -> bool:
    return (not identical or bool(check.shape_note) or check.cells > 0
            or any(d > TOLERANCE for d in check.numeric.values()))


def one_size(n: int, args: argparse.Namespace) -> tuple[list[str], list[str], bool]:
    """Both methods on the corpus of `n` rows: (table rows, notes, whether a check failed)."""
    splits = make_corpus(n, args.seed, train_unparseable=args.train_unparseable)
    runs = [run_method(method, splits, args.partitions, args.repeats) for method in METHODS]
    check = compare(runs[0], runs[1], splits["test"])
    identical = same_bytes(splits, runs[0].fitted)
    return rows(n, runs, check, identical, args.partitions), notes(n, splits, runs), failed(check, identical)


# --- command line ---------------------------------------------------------------------------

def sizes(value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {value!r}") from None
    if any(v < 10_000 for v in numbers):
        raise argparse.ArgumentTypeError(f"every size must be at least 10000, got {value}")
    return numbers


def load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes, default=[100_000, 1_000_000], help="rows per corpus, comma-separated")
    parser.add_argument("--partitions", type=int, default=8, help="train pieces ours fits from")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and size (the best is shown)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-unparseable", action="store_true", help="plant unparseable values in train too")
    args = parser.parse_args(argv)
    if args.partitions < 1 or args.repeats < 1:
        parser.error("--partitions and --repeats must be at least 1")

    print(f"seed {args.seed}, ours fitted from {args.partitions} train pieces, best of {args.repeats}, split 80/10/10; "
          f"{os.cpu_count()} cores, load average {load()} at start", flush=True)
    warm_up(args.seed, args.partitions)
    table = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    footnotes, bad = [], False
    for n in args.sizes:
        size_rows, size_notes, size_bad = one_size(n, args)
        table, footnotes, bad = table + size_rows, footnotes + size_notes, bad or size_bad
        print(f"... {n:,} rows done, load average {load()}", file=sys.stderr, flush=True)
    print("\n".join([*table, "", *footnotes, f"load average {load()} at the end"]))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
