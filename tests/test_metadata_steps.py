"""Unit tests for pipeline.steps.metadata: parsing, fitting on train alone from partials, applying, export,
feature selection.

A seeded corpus holds train, val and test with missing values, bad values and outliers planted in known
rows of test; every fitted statistic is checked against plain numpy/pandas on train.
"""
from __future__ import annotations

import io
import json
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.feature_selection import VarianceThreshold

from pipeline.steps.metadata import (
    OTHER,
    ColumnSpec,
    apply,
    feature_names,
    fit,
    from_json,
    merge_partials,
    parse_columns,
    partial_statistics,
    select_features,
    specs_from_mapping,
    to_json,
)

FORMAT = "%Y-%m-%d %H:%M:%S"
METADATA = {
    "confidence": {"type": "numeric", "missing": "drop", "outliers": "clip", "quantiles": [0.01, 0.99],
                   "scale": "standard"},
    "replies": {"type": "numeric", "missing": "median", "missing_indicator": True, "outliers": "winsorise",
                "scale": "robust"},
    "score": {"type": "numeric", "missing": "mean", "outliers": "drop", "quantiles": [0.05, 0.95], "scale": "minmax"},
    "channel": {"type": "categorical", "missing": "constant", "fill": "unknown", "max_categories": 3},
    "created": {"type": "datetime", "format": FORMAT, "scale": "standard"},
}
SPECS = specs_from_mapping(METADATA)
CHANNELS = ["web", "mail", "phone", "chat", "fax"]
# Planted in test (row -> value); each dropped record has one reason only.
TEST_PLANTS = {
    "confidence": {5: "25.0", 6: "3.5", 7: "-1.0", 8: None, 9: "n/a"},
    "replies": {10: "5000", 11: "-7", 12: "", 13: None},
    "score": {14: "1000", 15: "-1000", 16: None},
    "channel": {17: "pigeon", 18: "pigeon", 19: ""},
    "created": {20: "2021-02-30 10:00:00", 21: ""},
}
TEST_COUNTS = {
    "confidence:clipped_high": 2, "confidence:clipped_low": 1, "confidence:missing": 1, "confidence:dropped_missing": 1,
    "confidence:unparseable": 1, "replies:clipped_high": 1, "replies:clipped_low": 1, "replies:missing": 2,
    "replies:imputed": 2, "score:dropped_outlier": 2, "score:missing": 1, "score:imputed": 1, "channel:other": 2,
    "channel:missing": 1, "channel:imputed": 1, "created:unparseable": 1, "created:missing": 1,
}
TEST_DROPS = {8: "missing:confidence", 9: "unparseable:confidence", 14: "outlier:score", 15: "outlier:score",
              20: "unparseable:created"}


def _dates(rng: np.random.Generator, n: int) -> list[str]:
    seconds = rng.integers(1_577_836_800, 1_609_459_200, n)  # 2020
    return pd.to_datetime(seconds, unit="s").strftime(FORMAT).tolist()


def _train(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Train as a CSV reader gives it: strings, some missing (None, "", spaces), one bad number."""
    frame = pd.DataFrame({
        "confidence": [repr(float(v)) for v in rng.uniform(0, 1, n)], "replies": [str(v) for v in rng.poisson(3, n)],
        "score": [repr(float(v)) for v in rng.normal(10, 2, n)],
        "channel": rng.choice(CHANNELS, n, p=[0.4, 0.25, 0.2, 0.1, 0.05]).tolist(), "created": _dates(rng, n)},
        dtype=object)
    for column, rows in {"confidence": {3: None, 17: "", 50: "  ", 70: "oops"}, "replies": {4: None, 60: ""},
                         "score": {5: None}, "channel": {6: None, 61: " "}, "created": {7: ""}}.items():
        for row, value in rows.items():
            frame.loc[row, column] = value
    return frame


def _held_out(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Val or test: every value well inside train's bounds and vocabulary."""
    return pd.DataFrame({
        "confidence": [repr(float(v)) for v in rng.uniform(0.2, 0.8, n)],
        "replies": [str(v) for v in rng.integers(1, 6, n)],
        "score": [repr(float(v)) for v in rng.uniform(9, 11, n)], "channel": rng.choice(CHANNELS[:3], n).tolist(),
        "created": _dates(rng, n)}, dtype=object)


def corpus(seed: int = 0) -> pd.DataFrame:
    """400 train, 100 val, 100 test records (`id`, `split`, `label`, raw metadata); test has `TEST_PLANTS`."""
    rng = np.random.default_rng(seed)
    test = _held_out(rng, 100)
    for column, rows in TEST_PLANTS.items():
        for row, value in rows.items():
            test.loc[row, column] = value
    parts = {"train": _train(rng, 400), "val": _held_out(rng, 100), "test": test}
    frame = pd.concat([p.assign(split=s, id=[f"{s}-{i:03d}" for i in range(len(p))]) for s, p in parts.items()],
                      ignore_index=True)
    return frame.assign(label=np.where(frame["channel"].isin(["web", "mail"]), "pos", "neg"))


def fit_train(frame: pd.DataFrame, partitions: int = 1, *, seed: int = 0):
    """Fit as the stage will: train alone, in `partitions` pieces whose partials arrive in a shuffled order."""
    train = frame[frame["split"] == "train"]
    partials = [partial_statistics(p, SPECS) for p in _pieces(train.sample(frac=1, random_state=seed), partitions)]
    np.random.default_rng(seed).shuffle(partials)
    return fit(merge_partials(partials), SPECS)


def _pieces(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    return [frame.iloc[rows] for rows in np.array_split(np.arange(len(frame)), n)]


def _bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _numbers(raw: pd.Series) -> np.ndarray:
    """Plain pandas parsing of a numeric column: what did not parse or is blank is not a value."""
    return pd.to_numeric(raw.astype(object).where(raw.notna(), None), errors="coerce").dropna().to_numpy(np.float64)


def _column(fitted, name: str):
    return next(c for c in fitted.columns if c.spec.name == name)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return corpus()


@pytest.fixture(scope="module")
def fitted(frame):
    return fit_train(frame)


# --- specs ----------------------------------------------------------------------------------

def test_specs_are_sorted_checked_and_default_to_no_change():
    specs = specs_from_mapping({"b": {"type": "numeric"}, "a": {"type": "categorical"}})
    assert [s.name for s in specs] == ["a", "b"]
    assert specs[1] == ColumnSpec("b", "numeric")
    b = specs[1]
    assert (b.missing, b.outliers, b.scale, b.missing_indicator) == ("keep", "none", "none", False)


@pytest.mark.parametrize(("options", "key"), [
    ({"type": "text"}, "type"), ({}, "type"), ({"type": "numeric", "scale": "zscore"}, "scale"),
    ({"type": "numeric", "missing": "constant"}, "fill"), ({"type": "categorical", "missing": "mean"}, "missing"),
    ({"type": "categorical", "outliers": "clip"}, "outliers"),
    ({"type": "numeric", "quantiles": [0.9, 0.1]}, "quantiles"),
    ({"type": "categorical", "max_categories": 0}, "max_categories"), ({"type": "datetime"}, "format"),
    ({"type": "numeric", "missing": "drop", "missing_indicator": True}, "missing_indicator"),
    ({"type": "datetime", "format": FORMAT, "missing": "constant", "fill": "soon"}, "fill"),
    ({"type": "numeric", "scal": "standard"}, "scal"),
])
def test_bad_specs_name_the_column_and_key(options, key):
    with pytest.raises(ValueError, match=rf"'confidence'.*'{key}'"):
        specs_from_mapping({"confidence": options})


# --- parsing --------------------------------------------------------------------------------

def test_bad_numbers_and_dates_are_problems_and_blank_is_missing():
    raw = pd.DataFrame({"id": [f"r{i}" for i in range(8)],
                        "n": ["1.5", "abc", "", "  ", None, "1,5", "inf", " -0.0 "],
                        "d": ["1970-01-02 00:00:00", "2021-02-30 10:00:00", "", "yesterday", None, " ",
                              "1970-01-01 00:00:01", "x"],
                        "c": [" web ", "", None, "mail", "web", "  ", "3", "x"]}, dtype=object)
    specs = specs_from_mapping({"n": {"type": "numeric"}, "d": {"type": "datetime", "format": FORMAT},
                                "c": {"type": "categorical"}})
    parsed, problems = parse_columns(raw, specs)
    numbers = parsed["n"].to_numpy()
    assert numbers[0] == 1.5 and np.isnan(numbers[1:7]).all() and numbers[7] == 0.0 and not np.signbit(numbers[7])
    assert parsed["d"].tolist()[0] == 86400.0 and parsed["d"].tolist()[6] == 1.0
    assert parsed["c"].tolist() == ["web", None, None, "mail", "web", None, "3", "x"]
    found = {(r.id, r.reason): r.detail for r in problems.itertuples()}
    assert set(found) == {("r1", "unparseable:n"), ("r5", "unparseable:n"), ("r6", "unparseable:n"),
                          ("r1", "unparseable:d"), ("r3", "unparseable:d"), ("r7", "unparseable:d")}
    assert "'abc'" in found["r1", "unparseable:n"] and "'yesterday'" in found["r3", "unparseable:d"]


# --- fitting --------------------------------------------------------------------------------

def test_numeric_statistics_are_numpys_on_train(frame, fitted):
    """Order statistics are exact; mean and std sum in sorted order, so they equal numpy's to rounding."""
    for name in ("confidence", "replies", "score"):
        values = _numbers(frame.loc[frame["split"] == "train", name])
        summary, quantiles = _column(fitted, name).summary, METADATA[name].get("quantiles", [0.01, 0.99])
        assert summary["count"] == len(values)
        assert summary["mean"] == pytest.approx(values.mean(), rel=1e-13)
        assert summary["std"] == pytest.approx(np.std(values), rel=1e-12)  # population, as pandas' std(ddof=0)
        assert summary["std"] == pytest.approx(pd.Series(values).std(ddof=0), rel=1e-12)
        assert (summary["min"], summary["max"], summary["median"]) == (values.min(), values.max(), np.median(values))
        q25, q75, low, high = np.quantile(values, [0.25, 0.75, *quantiles])
        assert (summary["q25"], summary["q75"], summary["iqr"]) == (q25, q75, q75 - q25)
        assert (summary["q_low"], summary["q_high"]) == (low, high)
    confidence = _column(fitted, "confidence").summary
    assert (confidence["missing"], confidence["unparseable"]) == (3, 1)  # None, "" and spaces; "oops"


def test_treatment_statistics_follow_bounds_then_impute_then_scale(frame, fitted):
    train = frame[frame["split"] == "train"]
    confidence, c = _numbers(train["confidence"]), _column(fitted, "confidence")
    low, high = np.quantile(confidence, [0.01, 0.99])
    clipped = np.clip(confidence, low, high)
    assert (c.low, c.high) == (low, high) and c.fill is None
    assert (c.center, c.scale) == pytest.approx((clipped.mean(), clipped.std()), rel=1e-12)

    replies, r = _numbers(train["replies"]), _column(fitted, "replies")
    q_low, q_high = np.quantile(replies, [0.01, 0.99])
    w_low, w_high = replies[replies >= q_low].min(), replies[replies <= q_high].max()  # nearest train values inside
    winsorised = np.clip(replies, w_low, w_high)
    imputed = np.concatenate([winsorised, np.full(2, np.median(winsorised))])
    assert (r.low, r.high, r.fill) == (w_low, w_high, np.median(winsorised))
    assert (r.center, r.scale) == (np.median(imputed), np.subtract(*np.quantile(imputed, [0.75, 0.25])))

    score, s = _numbers(train["score"]), _column(fitted, "score")
    inside = score[(score >= s.low) & (score <= s.high)]
    assert (s.low, s.high) == tuple(np.quantile(score, [0.05, 0.95]))
    assert s.fill == pytest.approx(inside.mean(), rel=1e-13)
    with_fill = np.append(inside, s.fill)
    assert (s.center, s.scale) == (with_fill.min(), with_fill.max() - with_fill.min())


def test_vocabulary_and_dates_are_pandas_on_train(frame, fitted):
    train = frame[frame["split"] == "train"]
    counts = train["channel"].str.strip().replace("", None).dropna().value_counts()
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert _column(fitted, "channel").vocabulary == tuple(sorted([k for k, _ in top] + ["unknown"]))
    seconds = ((pd.to_datetime(train["created"].replace("", None), format=FORMAT) - pd.Timestamp(0))
               / pd.Timedelta(seconds=1)).dropna().to_numpy()
    created = _column(fitted, "created")
    assert created.summary["median"] == np.median(seconds) and created.summary["min"] == seconds.min()
    assert (created.center, created.scale) == pytest.approx((seconds.mean(), seconds.std()), rel=1e-12)


def test_changing_val_or_test_changes_no_statistic(frame, fitted):
    changed = frame.copy()
    held_out = changed["split"] != "train"
    changed.loc[held_out, "confidence"] = "1000.0"
    changed.loc[held_out, "channel"] = "pigeon"
    changed.loc[held_out, "created"] = None
    assert to_json(fit_train(changed)) == to_json(fitted)
    changed.loc[0, "confidence"] = "0.123"  # the check can see a change: one train value moves the mean
    assert to_json(fit_train(changed)) != to_json(fitted)


@pytest.mark.parametrize(("partitions", "seed"), [(1, 1), (7, 2), (7, 3), (400, 4)])
def test_any_partitioning_gives_the_same_bytes(frame, fitted, partitions, seed):
    assert to_json(fit_train(frame, partitions, seed=seed)) == to_json(fitted)


def test_partials_merge_in_any_tree(frame, fitted):
    train = frame[frame["split"] == "train"]
    partials = [partial_statistics(p, SPECS) for p in _pieces(train, 6)]
    nested = merge_partials([merge_partials(partials[4:]), merge_partials(partials[:1]), merge_partials(partials[1:4])])
    assert to_json(fit(nested, SPECS)) == to_json(fitted)


# --- applying -------------------------------------------------------------------------------

def test_test_counts_and_drops_are_the_planted_ones(frame, fitted):
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    done = apply(test, fitted)
    assert {k: v for k, v in done.counts.items() if v} == TEST_COUNTS
    dropped = done.fates.of("dropped")
    assert dict(zip(dropped["id"], dropped["reason"])) == {f"test-{row:03d}": r for row, r in TEST_DROPS.items()}
    assert "1000.0 >" in dropped.set_index("id").loc["test-014", "detail"]
    assert len(done.records) == len(test) - len(TEST_DROPS)
    kept = done.records.set_index("id")
    assert kept.loc[["test-012", "test-013"], "replies__missing"].tolist() == [1, 1]
    assert kept.loc[["test-017", "test-018"], f"channel={OTHER}"].tolist() == [1, 1]
    assert kept.loc["test-019", "channel=unknown"] == 1 and np.isnan(kept.loc["test-021", "created"])


def test_train_clip_counts_are_the_values_beyond_the_quantiles(frame, fitted):
    train = frame[frame["split"] == "train"]
    confidence = _numbers(train["confidence"])
    low, high = np.quantile(confidence, [0.01, 0.99])
    counts = apply(train, fitted).counts
    clipped = (counts["confidence:clipped_low"], counts["confidence:clipped_high"])
    assert clipped == ((confidence < low).sum(), (confidence > high).sum())
    score = _numbers(train["score"])
    bounds = _column(fitted, "score")
    assert counts["score:dropped_outlier"] == ((score < bounds.low) | (score > bounds.high)).sum() > 0


def test_features_have_fixed_columns_and_types(frame, fitted):
    records = apply(frame, fitted).records
    assert list(records.columns) == ["id", *feature_names(fitted)]
    channel = ["channel=mail", "channel=phone", "channel=unknown", "channel=web", f"channel={OTHER}"]
    assert feature_names(fitted)[:5] == channel  # vocabulary by name, the fill among it, then other
    assert records["confidence"].dtype == np.float64 and records["replies__missing"].dtype == np.int8
    assert (records.filter(like="channel=").sum(axis=1) == 1).all()  # a fill, so every record has one category


def test_exported_statistics_apply_to_the_same_bytes(frame, fitted):
    text = to_json(fitted)
    json.loads(text)  # plain JSON: no NaN, no numpy types
    back = from_json(text)
    assert to_json(back) == text
    assert _bytes(apply(frame, back).records) == _bytes(apply(frame, fitted).records)
    assert _bytes(apply(frame, back).fates.frame) == _bytes(apply(frame, fitted).fates.frame)


def test_apply_is_the_same_on_rerun_and_in_any_row_order(frame, fitted):
    once, again = apply(frame, fitted), apply(frame, fitted)
    assert _bytes(once.records) == _bytes(again.records) and once.counts == again.counts
    shuffled = apply(frame.sample(frac=1, random_state=5), fitted)
    by_id = [r.sort_values("id").reset_index(drop=True) for r in (once.records, shuffled.records)]
    assert _bytes(by_id[0]) == _bytes(by_id[1])
    assert once.records["id"].tolist() == [i for i in frame["id"] if i in set(once.records["id"])]  # input order


# --- categories and spread ------------------------------------------------------------------

def test_max_categories_keeps_the_most_frequent_ties_by_name():
    train = pd.DataFrame({"id": [f"r{i}" for i in range(12)], "k": list("aaaaabbbcccd")}, dtype=object)
    specs = specs_from_mapping({"k": {"type": "categorical", "max_categories": 2}})
    fitted = fit(merge_partials([partial_statistics(train, specs)]), specs)
    assert fitted.columns[0].vocabulary == ("a", "b")
    test = pd.DataFrame({"id": ["t0", "t1", "t2", "t3", "t4"], "k": ["c", "d", "a", "zzz", None]}, dtype=object)
    done = apply(test, fitted)
    assert list(done.records.columns) == ["id", "k=a", "k=b", f"k={OTHER}"]
    assert done.records[f"k={OTHER}"].tolist() == [1, 1, 0, 1, 0] and done.counts["k:other"] == 3
    assert done.records.iloc[4, 1:].tolist() == [0, 0, 0]  # missing: keep has no category


@pytest.mark.parametrize("scale", ["standard", "minmax", "robust"])
def test_a_constant_column_scales_by_one(scale):
    train = pd.DataFrame({"id": [f"r{i}" for i in range(5)], "x": ["5"] * 5}, dtype=object)
    specs = specs_from_mapping({"x": {"type": "numeric", "scale": scale}})
    with np.errstate(all="raise"):
        fitted = fit(merge_partials([partial_statistics(train, specs)]), specs)
        done = apply(pd.DataFrame({"id": ["a", "b"], "x": ["5", "7.5"]}, dtype=object), fitted)
    assert (fitted.columns[0].center, fitted.columns[0].scale) == (5.0, 1.0)
    assert done.records["x"].tolist() == [0.0, 2.5]


def test_winsorise_moves_to_a_train_value_and_clip_to_the_quantile():
    train = pd.DataFrame({"id": [f"r{i}" for i in range(11)], "x": [str(v) for v in range(10)] + ["100"]}, dtype=object)
    specs = specs_from_mapping({"clip": {"type": "numeric", "outliers": "clip", "quantiles": [0.05, 0.95]},
                                "win": {"type": "numeric", "outliers": "winsorise", "quantiles": [0.05, 0.95]}})
    train = train.assign(clip=train["x"], win=train["x"])
    clip, win = fit(merge_partials([partial_statistics(train, specs)]), specs).columns
    assert (clip.low, clip.high) == (0.5, 54.5)  # interpolated between train values
    assert (win.low, win.high) == (1.0, 9.0)  # the train values nearest inside those


# --- feature selection ----------------------------------------------------------------------

def test_feature_selection_is_deterministic_and_drops_a_constant(frame, fitted):
    train = frame[frame["split"] == "train"]
    done = apply(train, fitted)
    labels = train.set_index("id").loc[done.records["id"], "label"].to_numpy()
    with pytest.raises(ValueError, match="missing in created"):  # missing: keep leaves NaN, which MI cannot score
        select_features(done.records, labels, mutual_information_top=4, seed=0)
    features = done.records.drop(columns=["created"]).assign(constant=1.0)
    chosen = select_features(features, labels, min_variance=0.0, mutual_information_top=4, seed=0)
    assert "constant" not in chosen.kept and len(chosen.kept) == 4
    assert "channel=web" in chosen.kept and "channel=mail" in chosen.kept  # the label is web or mail
    again = select_features(features, labels, min_variance=0.0, mutual_information_top=4, seed=0)
    assert chosen.kept == again.kept and _bytes(chosen.scores) == _bytes(again.scores)
    order = np.random.default_rng(1).permutation(len(features))
    shuffled = select_features(features.iloc[order], labels[order], min_variance=0.0, mutual_information_top=4, seed=0)
    assert shuffled.kept == chosen.kept and _bytes(shuffled.scores) == _bytes(chosen.scores)


def test_variance_threshold_is_scikit_learns(frame, fitted):
    train = frame[frame["split"] == "train"]
    features = apply(train, fitted).records.drop(columns=["created"]).assign(constant=3.0)
    labels = np.zeros(len(features))
    for threshold in (0.0, 0.1):
        chosen = select_features(features, labels, min_variance=threshold, seed=0)
        support = VarianceThreshold(threshold).fit(features.drop(columns="id").to_numpy()).get_support()
        assert chosen.kept == features.columns[1:][support].tolist()


def test_scaled_test_values_are_scikit_learns_scalers_fitted_on_treated_train():
    """Each scale policy gives what scikit-learn's scaler, fitted on the treated train values, gives a
    test value: StandardScaler, RobustScaler (IQR) and MinMaxScaler."""
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    rng = np.random.default_rng(5)
    train_values, test_values = rng.lognormal(size=300), np.array([0.05, 0.5, 1.0, 3.0, 40.0])
    scalers = {"standard": StandardScaler(), "robust": RobustScaler(), "minmax": MinMaxScaler()}
    for scale, scaler in scalers.items():
        specs = specs_from_mapping({"x": {"type": "numeric", "outliers": "clip", "quantiles": [0.02, 0.98], "scale": scale}})
        train = pd.DataFrame({"id": [f"r{i:03d}" for i in range(300)], "x": [repr(float(v)) for v in train_values]})
        fitted = fit(merge_partials([partial_statistics(train, specs)]), specs)
        low, high = np.quantile(train_values, [0.02, 0.98])
        scaler.fit(np.clip(train_values, low, high).reshape(-1, 1))
        test = pd.DataFrame({"id": [f"t{i}" for i in range(5)], "x": [repr(float(v)) for v in test_values]})
        expected = scaler.transform(np.clip(test_values, low, high).reshape(-1, 1)).ravel()
        assert apply(test, fitted).records["x"].to_numpy() == pytest.approx(expected, rel=1e-12, abs=1e-12), scale


# --- parsing a column at a time -------------------------------------------------------------

DATE_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d", "%d/%m/%Y %H:%M", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S%z",
                "%d %b %Y", "%m/%d/%y %I:%M %p", "%Y%m%d"]


def _date_texts(format: str, rng: np.random.Generator) -> list[str]:
    """Strings in `format` and the hostile neighbours of each: unpadded, spaced, impossible days, seven
    fraction digits, another separator, years far outside pandas' old range, zones, junk."""
    seconds = rng.integers(-3_000_000_000, 4_000_000_000, 40)
    moments = [datetime(1970, 1, 1) + pd.Timedelta(seconds=int(s)).to_pytimedelta() for s in seconds]
    texts = [m.strftime(format.replace("%z", "+0000")) for m in moments]
    texts += [t.replace("-0", "-").replace("/0", "/") for t in texts[:10]]  # unpadded fields
    texts += [f"  {t} " for t in texts[:5]] + [t.replace(" ", "T", 1) for t in texts[:5]] + [t + "0" for t in texts[:5]]
    texts += ["2021-02-30 10:00:00", "2021-02-29", "30/02/2021 10:00", "2024-02-29 23:59:60", "0001-01-01 00:00:00",
              "9999-12-31 23:59:59", "1500-06-01", "2500-06-01 00:00:00", "2020-01-01T00:00:00.1234567",
              "2020-01-01T00:00:00.123456", "2020-01-01 00:00:00+05:30", "2020-01-01 00:00:00Z", "2020-01-01 00:00:00-2359",
              "1 Jan 2020", "01 jan 2020", "1 January 2020", "12/31/99 12:00 PM", "12/31/99 00:30 AM", "20200101",
              "2020011", "", "   ", "yesterday", "２０２０-01-01", "2020-01-01\x00", "nan", "NaT"]
    return texts


@pytest.mark.parametrize("format", DATE_FORMATS)
def test_datetimes_parsed_a_column_at_a_time_are_what_strptime_reads(format):
    """The vectorised path (pandas, then strptime for what pandas refuses) gives every string the
    value and the problem Python's strptime gives it alone."""
    from pipeline.steps.metadata import _datetime, _parsed_each, _texts_as_datetimes

    texts = np.array(_date_texts(format, np.random.default_rng(len(format))), dtype=object)
    values, details = _texts_as_datetimes(texts, format)
    expected = _parsed_each(texts, _datetime(format), np.float64)
    assert values.tobytes() == expected.values.tobytes(), [(t, v, e) for t, v, e in zip(texts, values, expected.values)
                                                           if not (v == e or (np.isnan(v) and np.isnan(e)))][:5]
    assert details.tolist() == expected.details.tolist()
    assert np.isfinite(values).sum() >= 40  # the well-formed strings did parse


def test_numbers_are_ascii_decimals_converted_exactly():
    from pipeline.steps.metadata import _texts_as_numbers

    good = ["1", " 2.5 ", "1.", ".5", "-0", "+3e2", "1e-400", "5e-324", "0.1", "123456789012345678901234567890", "\t7\n"]
    bad = ["1_000", "١٢", "NaN", "nan", "inf", "-Infinity", "abc", "0x10", "1,5", "1.2.3", "e5", ".", "+", "1e", "1 000"]
    values, details = _texts_as_numbers(np.array(good + bad + ["1e999", "", "  "], dtype=object))
    assert values[: len(good)].tolist() == [float(t) + 0.0 for t in good] and not np.signbit(values[4])
    assert details[: len(good)].tolist() == [None] * len(good)
    assert details[len(good) : len(good) + len(bad)].tolist() == [f"not a number: {t!r}" for t in bad]
    assert details[-3:].tolist() == ["not a finite number: '1e999'", None, None]
    assert np.isnan(values[len(good):]).all()
    rng = np.random.default_rng(3)
    many = np.array([repr(float(v)) for v in rng.lognormal(0, 20, 5000)] + [str(int(v)) for v in rng.integers(-10**15, 10**15, 5000)],
                    dtype=object)
    assert _texts_as_numbers(many)[0].tolist() == [float(t) for t in many]  # correctly rounded, as Python's float


def test_a_column_of_strings_json_numbers_and_typed_datetimes_parses_each_its_own_way():
    frame = pd.DataFrame({"id": list("abcdef"), "n": ["1.5", 2, 2.5, None, True, "x"],
                          "d": ["1970-01-02 00:00:00", pd.Timestamp("1970-01-01 00:00:02"), datetime(1970, 1, 1, 0, 0, 3), None, 5, ""]},
                         dtype=object)
    specs = specs_from_mapping({"n": {"type": "numeric"}, "d": {"type": "datetime", "format": FORMAT}})
    parsed, problems = parse_columns(frame, specs)
    assert parsed["n"].tolist()[:3] == [1.5, 2.0, 2.5] and np.isnan(parsed["n"].tolist()[3])
    assert parsed["d"].tolist()[:3] == [86400.0, 2.0, 3.0]
    assert sorted(zip(problems["id"], problems["reason"])) == [("e", "unparseable:d"), ("e", "unparseable:n"), ("f", "unparseable:n")]


def test_numeric_formats_take_the_regular_expression_and_others_the_round_trip():
    """The canonical shape of a numeric format is checked by a regular expression (no formatting
    back); a format with names or offsets is checked by writing the moment back."""
    import re

    from pipeline.steps.metadata import _canonical_pattern

    pattern = _canonical_pattern("%Y-%m-%d %H:%M:%S.%f")
    assert re.fullmatch(pattern, "2024-02-29 23:59:59.000001")
    for text in ("2024-2-29 23:59:59.000001", "2024-02-29 23:59:60.000001", "2024-02-29 24:00:00.000000",
                 "2024-02-29 23:59:59.0000001", "2024-13-01 00:00:00.000000", "2024-02-29T23:59:59.000001"):
        assert not re.fullmatch(pattern, text), text
    assert _canonical_pattern("100%% on %Y%m%d") == r"^100%\ on\ [0-9]{4}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])$"
    assert _canonical_pattern("%d %b %Y") is None and _canonical_pattern("%Y-%m-%d %H:%M:%S%z") is None


def test_a_lone_surrogate_does_not_parse_and_raises_nothing():
    """A JSON escape can make a string UTF-8 cannot hold; it is a value that does not parse."""
    frame = pd.DataFrame({"id": ["a", "b", "c"], "n": ["1", "\udcff", "2\ud800"], "d": ["2020-01-01 00:00:00", "\udcff", ""],
                          "c": ["x", "\udcff", ""]}, dtype=object)
    specs = specs_from_mapping({"n": {"type": "numeric"}, "d": {"type": "datetime", "format": FORMAT}, "c": {"type": "categorical"}})
    parsed, problems = parse_columns(frame, specs)
    assert parsed["n"].tolist()[0] == 1.0 and parsed["d"].tolist()[0] == 1577836800.0 and parsed["c"].tolist()[1] == "\udcff"
    assert sorted(zip(problems["id"], problems["reason"])) == [("b", "unparseable:d"), ("b", "unparseable:n"), ("c", "unparseable:n")]
    assert "'\\udcff'" in problems.loc[problems["reason"] == "unparseable:n", "detail"].iloc[0]
