"""Metadata columns: declared extra source columns read from every tabular format and from image
manifests, kept beside the content as canonical JSON through the stages (generated records take
their parent's), and record filters on them applied by clean with a reason per drop.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import write_params
from pipeline.errors import ParamsError
from pipeline.io import read_records
from pipeline.params import DatasetParams, load_params
from pipeline.sources import read_source
from pipeline.stages import clean

ROWS = [  # text, label, confidence, channel, created
    ("my parcel never came", "shipping", "0.9", "web", "2024-01-02 10:00:00"),
    ("refund the double charge", "billing", "0.3", "sms", "2024-01-03 11:00:00"),
    ("the app crashes on login", "technical", "", "web", "2024-01-04 12:00:00"),
    ("where is my order", "shipping", "abc", "", "not a date"),
    ("card declined twice", "billing", "0.75", "email", "2023-12-31 23:59:59"),
]
METADATA = {"confidence": {"type": "numeric"}, "channel": {"type": "categorical"},
            "created": {"type": "datetime", "format": "%Y-%m-%d %H:%M:%S"}}


def write_source(root: Path, fmt: str) -> dict:
    """The rows in `fmt` under root; the dataset's params entry."""
    names = ["text", "label", "confidence", "channel", "created"]
    if fmt == "tsv":
        (root / "c.tsv").write_text("\t".join(names) + "\n" + "\n".join("\t".join(r) for r in ROWS) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        (root / "c.jsonl").write_text("\n".join(json.dumps(dict(zip(names, r))) for r in ROWS) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({n: [r[i] for r in ROWS] for i, n in enumerate(names)}), root / "c.parquet")
    return {"modality": "text", "source": str(root / f"c.{fmt}"), "format": fmt, "metadata": METADATA}


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "parquet"])
def test_every_tabular_format_reads_the_declared_columns_as_canonical_json(tmp_path, fmt):
    raw = read_source(DatasetParams.model_validate(write_source(tmp_path, fmt)))
    values = [json.loads(m) for m in raw["metadata"]]
    assert [list(v) for v in values] == [["channel", "confidence", "created"]] * len(ROWS)  # sorted keys
    assert [(v["confidence"], v["channel"], v["created"]) for v in values] == [r[2:] for r in ROWS]
    assert raw["metadata"][0] == '{"channel":"web","confidence":"0.9","created":"2024-01-02 10:00:00"}'


def test_a_declared_column_the_source_lacks_is_named_with_its_key(tmp_path):
    entry = write_source(tmp_path, "tsv")
    params = write_params(tmp_path / "params.yaml", {"t": {**entry, "metadata": {**METADATA, "replies": {"type": "numeric"}}}})
    assert clean.main(["--dataset", "t", "--params", str(params), "--output", str(tmp_path / "out"),
                       "--metrics", str(tmp_path / "m.json")]) != 0
    assert not (tmp_path / "out").exists()


def test_no_metadata_declared_leaves_the_column_null(tmp_path):
    entry = {k: v for k, v in write_source(tmp_path, "tsv").items() if k != "metadata"}
    assert read_source(DatasetParams.model_validate(entry))["metadata"].isna().all()


def run_clean(root: Path, entry: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    params = write_params(root / "params.yaml", {"t": entry})
    assert clean.main(["--dataset", "t", "--params", str(params), "--output", str(root / "clean.parquet"),
                       "--ledger", str(root / "ledger.parquet"), "--metrics", str(root / "m.json")]) == 0
    return json.loads((root / "m.json").read_text()), read_records(root / "clean.parquet"), pd.read_parquet(root / "ledger.parquet")


def test_filters_drop_with_a_reason_naming_the_column_value_and_bound(tmp_path):
    entry = {**write_source(tmp_path, "tsv"), "filters": [{"column": "confidence", "min": 0.6},
                                                          {"column": "created", "min": "2024-01-01 00:00:00"}]}
    metrics, records, ledger = run_clean(tmp_path, entry)
    assert sorted(records["text"]) == ["my parcel never came"]
    assert metrics["dropped"] == {"filtered:confidence": 3, "filtered:created": 1}
    detail = dict(zip(ledger["reason"] + " " + ledger["detail"].str.split(": ", n=1).str[1], ledger["detail"]))
    assert set(detail) == {"filtered:confidence confidence 0.3 < 0.6", "filtered:confidence confidence missing",
                           "filtered:confidence not a number: 'abc'", "filtered:created created 2023-12-31 23:59:59 < 2024-01-01 00:00:00"}
    assert all(d.startswith("c.tsv:") for d in ledger["detail"])  # where in the source


def test_a_categorical_filter_keeps_the_listed_values(tmp_path):
    entry = {**write_source(tmp_path, "tsv"), "filters": [{"column": "channel", "values": ["web", "email"]}]}
    metrics, records, _ = run_clean(tmp_path, entry)
    assert sorted(json.loads(m)["channel"] for m in records["metadata"]) == ["email", "web", "web"]
    assert metrics["dropped"] == {"filtered:channel": 2}


@pytest.mark.parametrize(("filters", "named"), [
    ([{"column": "replies", "min": 1}], "declare it under metadata first"),
    ([{"column": "confidence", "values": ["a"]}], "filtered by min and max"),
    ([{"column": "confidence", "min": "high"}], "'high' is not a number"),
    ([{"column": "created", "max": "yesterday"}], "is not a date in"),
    ([{"column": "channel", "min": 1}], "filtered by values"),
])
def test_a_filter_that_cannot_apply_fails_on_load(tmp_path, filters, named):
    params = write_params(tmp_path / "params.yaml", {"t": {**write_source(tmp_path, "tsv"), "filters": filters}})
    with pytest.raises(ParamsError, match=named):
        load_params(params)


def test_an_image_manifest_carries_its_extra_columns(tmp_path):
    (tmp_path / "images").mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(buffer, format="PNG")
        (tmp_path / "images" / name).write_bytes(buffer.getvalue())
    (tmp_path / "manifest.csv").write_text("path,label,annotator\nimages/a.png,red,ann1\nimages/b.png,blue,\n", encoding="utf-8")
    dataset = DatasetParams.model_validate({"modality": "image", "source": str(tmp_path / "manifest.csv"), "format": "image_manifest",
                                            "metadata": {"annotator": {"type": "categorical"}}})
    raw = read_source(dataset)
    assert [json.loads(m) for m in raw["metadata"]] == [{"annotator": "ann1"}, {"annotator": ""}]
    with pytest.raises(ValueError, match="image folder"):
        DatasetParams.model_validate({"modality": "image", "source": "x", "format": "image_folder",
                                      "metadata": {"annotator": {"type": "categorical"}}})


def test_metadata_travels_to_the_final_splits_and_generated_records_take_their_parents(tmp_path):
    from test_stages import _sentence

    from pipeline.stages import augment, dedup, normalise, rebalance, split

    rows = [(_sentence(i), "billing" if i % 3 else "shipping", f"{i / 50:.2f}") for i in range(48)]
    (tmp_path / "c.tsv").write_text("text\tlabel\tconfidence\n" + "\n".join("\t".join(r) for r in rows) + "\n", encoding="utf-8")
    entry = {"modality": "text", "source": "c.tsv", "format": "tsv", "metadata": {"confidence": {"type": "numeric"}},
             "filters": [{"column": "confidence", "min": 0.1}]}
    params = write_params(tmp_path / "params.yaml", {"t": entry}, rebalance={"strategy": "random_over", "ratio": 1.0})
    d = tmp_path / "data"
    calls = [(clean, ["--root", str(tmp_path), "--output", str(d / "clean.parquet")]),
             (normalise, ["--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet")]),
             (dedup, ["--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet")]),
             (split, ["--input", str(d / "dedup.parquet"), "--output", str(d / "split"), "--leakage", str(d / "leakage.json")]),
             (augment, ["--input", str(d / "split"), "--output", str(d / "augment.parquet"), "--preview", str(d / "preview")]),
             (rebalance, ["--train", str(d / "augment.parquet"), "--split", str(d / "split"), "--output", str(d / "final")])]
    for module, args in calls:
        name = module.__name__.rsplit(".", 1)[-1]
        assert module.main(["--dataset", "t", "--params", str(params), "--metrics", str(d / f"{name}.json"), *args]) == 0, name
    assert json.loads((d / "clean.json").read_text())["dropped"] == {"filtered:confidence": 5}  # 0.00 .. 0.08
    final = pd.concat([read_records(d / "final" / f"{s}.parquet") for s in ("train", "val", "test")], ignore_index=True)
    source = {row: json.dumps({"confidence": r[2]}, separators=(",", ":")) for row, r in enumerate(rows, start=2)}
    originals = final[final["parent_id"].isna()]
    assert len(originals) == 43 and (originals["metadata"] == originals["source_row"].map(source)).all()
    by_id = final.set_index("id")["metadata"]
    generated = final[final["parent_id"].notna()]
    assert len(generated) > 0 and (generated["metadata"] == generated["parent_id"].map(by_id)).all()


# --- the prepare stage -----------------------------------------------------------------------

PREPARED = {"confidence": {"type": "numeric", "missing": "median", "missing_indicator": True, "outliers": "drop",
                           "quantiles": [0.05, 0.95], "scale": "standard"},
            "channel": {"type": "categorical", "missing": "constant", "fill": "unknown", "max_categories": 2}}


def split_corpus(root: Path, engine: dict | None = None) -> Path:
    """60 tickets with confidence (missing every 9th, 9.5 at rows 6 and 35) and channel (missing every 7th),
    through clean, normalise, dedup and split; the params file."""
    from test_stages import _sentence

    from pipeline.stages import dedup, normalise, split

    rows = []
    for i in range(60):
        confidence = "" if i % 9 == 4 else ("9.5" if i % 29 == 6 else f"{0.5 + (i % 10) / 20:.2f}")
        channel = "" if i % 7 == 3 else ("web", "sms", "email", "web", "phone")[i % 5]
        rows.append((_sentence(i), "billing" if i % 2 else "shipping", confidence, channel))
    (root / "c.tsv").write_text("text\tlabel\tconfidence\tchannel\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    entry = {"modality": "text", "source": "c.tsv", "format": "tsv", "metadata": PREPARED}
    params = write_params(root / "params.yaml", {"t": entry}, **({"engine": engine} if engine else {}))
    d = root / "data"
    for module, args in ((clean, ["--root", str(root), "--output", str(d / "clean.parquet")]),
                         (normalise, ["--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet")]),
                         (dedup, ["--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet")]),
                         (split, ["--input", str(d / "dedup.parquet"), "--output", str(d / "split"), "--leakage", str(d / "leakage.json")])):
        name = module.__name__.rsplit(".", 1)[-1]
        assert module.main(["--dataset", "t", "--params", str(params), "--metrics", str(d / f"{name}.json"), *args]) == 0, name
    return params


def run_prepare(root: Path, params: Path, split_folder: Path, out: str = "out") -> tuple[dict, Path]:
    from pipeline.stages import prepare

    o = root / out
    assert prepare.main(["--dataset", "t", "--params", str(params), "--input", str(split_folder), "--output", str(o / "prepared"),
                         "--features", str(o / "metadata"), "--ledger", str(o / "ledger.parquet"), "--metrics", str(o / "m.json")]) == 0
    return json.loads((o / "m.json").read_text()), o


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    params = split_corpus(root)
    metrics, out = run_prepare(root, params, root / "data" / "split")
    return root, params, metrics, out


def test_statistics_are_train_alone_and_test_records_change_none(prepared):
    import shutil

    from pipeline.params import load_params
    from pipeline.steps.metadata import fit, from_json, metadata_frame, partial_statistics, spec_of, to_json

    root, params, _, out = prepared
    specs = [spec_of(n, c) for n, c in sorted(load_params(params).datasets["t"].metadata.items())]
    train = read_records(root / "data" / "split" / "train.parquet")
    alone = fit(partial_statistics(metadata_frame(train["id"], train["metadata"], [s.name for s in specs]), specs), specs)
    written = (out / "metadata" / "fitted.json").read_text()
    assert written == to_json(alone) and from_json(written) == alone
    changed = root / "changed"
    shutil.copytree(root / "data" / "split", changed)
    test = read_records(changed / "test.parquet")
    test["metadata"] = '{"channel":"fax","confidence":"0.01"}'
    from pipeline.io import write_records
    shutil.rmtree(changed / "test.parquet")
    write_records(test, changed / "test.parquet")
    _, again = run_prepare(root, params, changed, out="again")
    assert (again / "metadata" / "fitted.json").read_text() == written


def test_drops_have_reasons_and_the_rest_go_on_unchanged_with_their_features(prepared):
    root, _, metrics, out = prepared
    ledger = pd.read_parquet(out / "ledger.parquet")
    assert set(ledger["reason"]) == {"outlier:confidence"} and metrics["dropped"] == {"outlier:confidence": len(ledger)}
    outside = ledger["detail"].tolist()
    assert sum("9.5" in d for d in outside) == 2 and len(outside) == metrics["values"]["confidence:dropped_outlier"]
    for name in ("train", "val", "test"):
        before = read_records(root / "data" / "split" / f"{name}.parquet")
        after = read_records(out / "prepared" / f"{name}.parquet")
        kept = before[~before["id"].isin(ledger["id"])].sort_values("id").reset_index(drop=True)
        pd.testing.assert_frame_equal(after.sort_values("id").reset_index(drop=True), kept)
        features = pd.read_parquet(out / "metadata" / f"{name}.parquet")
        assert features["id"].tolist() == sorted(kept["id"])
        assert list(features.columns) == ["id", *metrics["features"]]
    channel = metrics["features"][:-2]  # the train vocabulary (2 most frequent and the fill), sorted, then the rest
    assert len(channel) == 4 and "channel=unknown" in channel and channel[-1] == "channel=__other__" and channel[:-1] == sorted(channel[:-1])
    assert metrics["features"][-2:] == ["confidence", "confidence__missing"]
    assert metrics["values"]["confidence:imputed"] == metrics["values"]["confidence:missing"] > 0


@pytest.mark.slow
def test_a_dask_cluster_prepares_the_same_bytes(prepared, tmp_path):
    root, _, _, out = prepared
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "c.tsv", "format": "tsv", "metadata": PREPARED}},
                          engine={"kind": "dask", "partition_rows": 7, "dask": {"workers": 2, "memory_limit": "1GB"}})
    _, dask = run_prepare(tmp_path, params, root / "data" / "split")
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "m.json")
    assert files and all((dask / f).read_bytes() == (out / f).read_bytes() for f in files)


def test_a_treatment_train_cannot_fit_fails_naming_the_column_not_a_traceback(prepared, tmp_path, stage_log):
    from pipeline.stages import prepare

    root, *_ = prepared
    entry = {"modality": "text", "source": "c.tsv", "format": "tsv",
             "metadata": {**PREPARED, "replies": {"type": "numeric", "missing": "median"}}}  # no record has replies
    params = write_params(tmp_path / "params.yaml", {"t": entry})
    code = prepare.main(["--dataset", "t", "--params", str(params), "--input", str(root / "data" / "split"),
                         "--output", str(tmp_path / "p"), "--features", str(tmp_path / "f"), "--metrics", str(tmp_path / "m.json")])
    assert code != 0 and "Traceback" not in stage_log.text
    assert "datasets.t.metadata.replies.missing: median needs values, and the train split has none" in stage_log.text
    assert not (tmp_path / "p").exists()


def test_feature_selection_keeps_what_varies_and_informs_judged_on_train(prepared, tmp_path):
    root, *_ = prepared
    entry = {"modality": "text", "source": "c.tsv", "format": "tsv", "metadata": PREPARED,
             "feature_selection": {"min_variance": 0.0, "mutual_information_top": 3}}
    params = write_params(tmp_path / "params.yaml", {"t": entry})
    metrics, out = run_prepare(tmp_path, params, root / "data" / "split")
    selection = json.loads((out / "metadata" / "selection.json").read_text())
    assert metrics["selected"] == selection["kept"] and len(selection["kept"]) == 3
    scores = {s["column"]: s for s in selection["scores"]}
    assert set(scores) == set(metrics["features"]) and all(scores[c]["kept"] for c in selection["kept"])
    ranked = sorted((s for s in scores.values() if s["mutual_information"] is not None), key=lambda s: -s["mutual_information"])
    assert {s["column"] for s in ranked[:3]} == set(selection["kept"])
    for name in ("train", "val", "test"):
        assert list(pd.read_parquet(out / "metadata" / f"{name}.parquet").columns) == ["id", *selection["kept"]]
    _, again = run_prepare(tmp_path, params, root / "data" / "split", out="again")
    assert (again / "metadata" / "selection.json").read_bytes() == (out / "metadata" / "selection.json").read_bytes()


def test_mutual_information_over_a_column_that_keeps_missing_values_fails_on_load(tmp_path):
    entry = {**write_source(tmp_path, "tsv"), "metadata": {"confidence": {"type": "numeric"}},
             "feature_selection": {"mutual_information_top": 1}}
    with pytest.raises(ParamsError, match="keeps missing values"):
        load_params(write_params(tmp_path / "params.yaml", {"t": entry}))
