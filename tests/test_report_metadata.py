"""The report's metadata section: what prepare fitted on train and counted, from a real prepare run."""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_params
from test_metadata_columns import PREPARED, run_prepare, split_corpus
from test_report import CARD, LEAKAGE, METRICS, _stage_inputs

from pipeline.io import read_records
from pipeline.report.metadata import MetadataInputs, number
from pipeline.report.page import ReportInputs, render
from pipeline.steps.metadata import (
    fit,
    from_json,
    metadata_frame,
    partial_statistics,
    specs_from_mapping,
)

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """test_metadata_columns' corpus through split, then prepare with feature selection: (root, the
    dataset's params entry, prepare's metrics, prepare's output folder)."""
    root = tmp_path_factory.mktemp("report_metadata")
    split_corpus(root)
    entry = {"modality": "text", "source": "c.tsv", "format": "tsv", "metadata": PREPARED,
             "feature_selection": {"min_variance": 0.0, "mutual_information_top": 3}}
    params = write_params(root / "selecting.yaml", {"t": entry})
    metrics, out = run_prepare(root, params, root / "data" / "split")
    return root, entry, metrics, out


def _report(tmp_path: Path, entry: dict, prepare: dict | None, metadata: Path | None, name: str = "report.html") -> str:
    """The report stage run on the test_report inputs, plus prepare's metrics and metadata folder where given."""
    from pipeline.stages import report

    data, metrics = tmp_path / "data", tmp_path / "metrics"
    if not data.exists():
        _stage_inputs(tmp_path)
        if prepare is not None:
            (metrics / "prepare.json").write_text(json.dumps(prepare))
        if metadata is not None:
            shutil.copytree(metadata, data / "metadata")
    params = write_params(tmp_path / "params.yaml", {"t": entry}, gates={"warn_only": True})
    out = tmp_path / name
    assert report.main(["--dataset", "t", "--params", str(params), "--data", str(data), "--stage-metrics", str(metrics),
                        "--output", str(out), "--metrics", str(tmp_path / "report.json")]) == 0
    return out.read_text(encoding="utf-8")


def _train_metadata(root: Path) -> pd.DataFrame:
    """`id` and the raw metadata values of the split's train records."""
    train = read_records(root / "data" / "split" / "train.parquet")
    return metadata_frame(train["id"], train["metadata"], ["confidence", "channel"])


def _section(page: str) -> str:
    return page.split("<section id='metadata'>")[1].split("</section>")[0]


def _row(section: str, column: str) -> str:
    return section.split(f"<tr><td>{column}</td>")[1].split("</tr>")[0]


def test_the_section_shows_what_train_fitted_and_what_prepare_counted(prepared, tmp_path):
    root, entry, metrics, out = prepared
    page = _report(tmp_path, entry, metrics, out / "metadata")
    section = _section(page)
    fitted = {c.spec.name: c for c in from_json((out / "metadata" / "fitted.json").read_text()).columns}
    train = _train_metadata(root)
    confidence = pd.to_numeric(train["confidence"].replace("", np.nan))
    kept = confidence[(confidence >= fitted["confidence"].low) & (confidence <= fitted["confidence"].high)]
    assert fitted["confidence"].fill == kept.median()  # the train median, after outlier drops, is what was fitted
    row = _row(section, "confidence")
    assert f"imputation value: {number(kept.median())}" in row and "missing: median<br>missing_indicator: true" in row
    assert f"outlier bounds: {number(confidence.quantile(0.05))} to {number(confidence.quantile(0.95))}" in row
    assert "outliers: drop (quantiles 0.05, 0.95)" in row and f"train: {confidence.notna().sum()} values, {confidence.isna().sum()} missing" in row
    values = metrics["values"]
    assert f"dropped as outliers: {values['confidence:dropped_outlier']}" in row and f"imputed: {values['confidence:imputed']}" in row
    channel = _row(section, "channel")
    assert html.escape('imputation value: "unknown"') in channel and html.escape('vocabulary (3): "sms", "unknown", "web"') in channel
    assert f"outside the vocabulary (__other__): {values['channel:other']}" in channel and "max_categories: 2" in channel
    assert "<code><s>channel=sms</s></code>" in section and "<code>confidence</code>" in section  # not selected: struck through
    assert "3 kept by feature selection" in section and "<h3>Feature selection</h3>" in section
    scores = section.split("<h3>Feature selection</h3>")[1]
    assert [r.split("</td>")[0] for r in scores.split("<tr><td>")[1:4]] == ["confidence", "confidence__missing", "channel=web"]
    assert page == _report(tmp_path, entry, metrics, out / "metadata", name="again.html")  # the same bytes on a rerun
    assert str(tmp_path) not in page


def test_a_dataset_without_metadata_columns_gets_no_section_and_reads_no_metadata_file(tmp_path):
    unread = tmp_path / "unread"
    unread.mkdir()
    (unread / "fitted.json").write_text("not json")  # read, it would fail the stage
    page = _report(tmp_path, {"modality": "text", "source": "x.tsv", "format": "tsv"}, None, unread)
    assert "id='metadata'" not in page and "Metadata columns" not in page


def test_declared_without_fitted_json_says_so(prepared, tmp_path):
    _, entry, metrics, _ = prepared
    section = _section(_report(tmp_path, entry, metrics, None))
    assert "No fitted statistics: data/t/metadata/fitted.json was not found" in section


def _fitted(values: list[object], mapping: dict) -> MetadataInputs:
    """The real fit of `mapping`'s columns on one column of raw train values per name."""
    specs = specs_from_mapping(mapping)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(values))], **{s.name: values for s in specs}})
    return MetadataInputs(fit(partial_statistics(frame, specs), specs))


def test_corpus_categories_and_column_names_stay_text_and_long_vocabularies_are_cut():
    categories = [HOSTILE, *(f"c{i:02d}" for i in range(20)), "", HOSTILE]
    shown = _fitted(categories, {"<b>x</b>": {"type": "categorical", "missing": "most_frequent"}})
    prepare = {"columns": ["<b>x</b>"], "features": [f"<b>x</b>={c}" for c in shown.fitted.columns[0].vocabulary],
               "values": {"<b>x</b>:missing": 1, "<b>x</b>:imputed": 1}}
    page = render(ReportInputs("demo", "text", CARD, LEAKAGE, {**METRICS, "prepare": prepare}, [], {"train": {"a": 1}}, metadata=shown))
    section = _section(page)
    assert "<script>" not in page and "<b>x" not in page
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in section
    assert 'most frequent &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;' in section
    assert "vocabulary (21): " in section and "… and 9 more" in section
    assert "<code>&lt;b&gt;x&lt;/b&gt;=&lt;script&gt;alert(1)&lt;/script&gt;</code>" in section


def test_datetimes_show_as_dates_and_clip_counts_per_bound():
    dates = ["2024-01-01 00:00:00", "2024-01-02 00:00:00", "2024-01-03 12:00:00", "2024-03-01 00:00:00", ""]
    shown = _fitted(dates, {"created": {"type": "datetime", "format": "%Y-%m-%d %H:%M:%S", "outliers": "clip",
                                        "quantiles": [0.0, 0.5], "scale": "minmax", "missing": "median"}})
    prepare = {"features": ["created"], "values": {"created:clipped_high": 2, "created:missing": 1, "created:imputed": 1}}
    section = _section(render(ReportInputs("demo", "text", CARD, LEAKAGE, {"prepare": prepare}, [], {"train": {"a": 1}}, metadata=shown)))
    row = _row(section, "created")
    assert "outlier bounds: 2024-01-01 00:00:00 to 2024-01-02 18:00:00" in row and "format: %Y-%m-%d %H:%M:%S" in row
    assert "min 2024-01-01 00:00:00, median 2024-01-02 18:00:00, max 2024-03-01 00:00:00" in row
    assert "imputation value: 2024-01-02 09:00:00" in row and "scaler: centre 2024-01-01 00:00:00, scale 1.75 days" in row
    assert "clipped low: 0<br>clipped high: 2<br>unparseable (dropped): 0" in row
