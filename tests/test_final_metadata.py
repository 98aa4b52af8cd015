"""The final dataset's metadata features: rebalance writes `final/metadata/{train,val,test}.parquet`,
one row per final record in the final id order, prepare's row for an original and its root
original's for a generated record (augmented variant, oversampled copy), the same bytes from any
partitioning and from a Dask cluster; tables of ids alone when the dataset declares no metadata.

The real stages run clean -> normalise -> dedup -> split -> prepare -> augment on a generated,
imbalanced text corpus with metadata columns, then rebalance oversamples the minority class.
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import write_params

from pipeline.io import read_records, write_table_chunks, write_table_spill
from pipeline.stages import rebalance
from pipeline.stages.rebalance import row_groups
from pipeline.steps.metadata import from_json, record_features

SPLITS = ("train", "val", "test")
METADATA = {"confidence": {"type": "numeric", "missing": "median", "missing_indicator": True, "outliers": "drop",
                           "quantiles": [0.05, 0.95], "scale": "standard"},
            "channel": {"type": "categorical", "missing": "constant", "fill": "unknown", "max_categories": 2}}
OVERSAMPLE = {"strategy": "random_over", "ratio": 1.0}


def _entry(metadata: bool = True) -> dict:
    entry = {"modality": "text", "source": "c.tsv", "format": "tsv"}
    return {**entry, "metadata": METADATA} if metadata else entry


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """72 tickets, one shipping for three billing, with confidence (blank every 9th; values outside
    train's 5-95% quantiles, which prepare drops) and channel (blank every 7th), through the real stages up to augment."""
    from test_stages import _sentence

    from pipeline.stages import augment, clean, dedup, normalise, prepare, split

    root = tmp_path_factory.mktemp("final_metadata")
    rows = []
    for i in range(72):
        confidence = "" if i % 9 == 4 else ("9.5" if i % 29 == 6 else f"{0.5 + (i % 10) / 20:.2f}")
        channel = "" if i % 7 == 3 else ("web", "sms", "email", "web", "phone")[i % 5]
        rows.append((_sentence(i), "shipping" if i % 4 == 0 else "billing", confidence, channel))
    (root / "c.tsv").write_text("text\tlabel\tconfidence\tchannel\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    params = write_params(root / "params.yaml", {"t": _entry()})
    d = root / "data"
    calls = [(clean, ["--root", str(root), "--output", str(d / "clean.parquet")]),
             (normalise, ["--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet")]),
             (dedup, ["--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet")]),
             (split, ["--input", str(d / "dedup.parquet"), "--output", str(d / "split"), "--leakage", str(d / "leakage.json")]),
             (prepare, ["--input", str(d / "split"), "--output", str(d / "prepared"), "--features", str(d / "metadata")]),
             (augment, ["--input", str(d / "prepared"), "--output", str(d / "augment" / "train.parquet"),
                        "--preview", str(d / "preview")])]
    for module, args in calls:
        name = module.__name__.rsplit(".", 1)[-1]
        assert module.main(["--dataset", "t", "--params", str(params), "--metrics", str(d / f"{name}.json"), *args]) == 0, name
    assert json.loads((d / "prepare.json").read_text())["dropped"]  # prepare dropped records: final must not ask for them
    return d


def _rebalance(d: Path, out: Path, *, metadata: bool = True, engine: dict | None = None, features: Path | None = None,
               pass_features: bool = True) -> int:
    """rebalance on the chain's augmented train and prepared val/test; `--metadata` is the chain's
    features folder (or `features`), left out without `pass_features`."""
    out.mkdir(parents=True, exist_ok=True)
    params = write_params(out / "params.yaml", {"t": _entry(metadata)}, rebalance=OVERSAMPLE, **({"engine": engine} if engine else {}))
    return rebalance.main(["--dataset", "t", "--params", str(params), "--train", str(d / "augment" / "train.parquet"),
                           "--split", str(d / "prepared"), "--output", str(out / "final"), "--ledger", str(out / "ledger.parquet"),
                           "--metrics", str(out / "metrics.json"),
                           *(["--metadata", str(features or d / "metadata")] if pass_features else [])])


@pytest.fixture(scope="module")
def final(chain, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rebalanced")
    assert _rebalance(chain, out) == 0
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _bits(frame: pd.DataFrame) -> dict[str, object]:
    """Each column's values as bytes (floats bit for bit: NaN, -0.0), ids as a list."""
    return {c: frame[c].tolist() if c == "id" else (str(frame[c].dtype), frame[c].to_numpy().tobytes()) for c in frame.columns}


def test_every_final_record_has_one_row_in_final_id_order(chain, final):
    metrics = json.loads((final / "metrics.json").read_text())
    assert sorted(p.name for p in (final / "final" / "metadata").iterdir()) == sorted(["fitted.json", *(f"{s}.parquet" for s in SPLITS)])
    for name in SPLITS:
        records = read_records(final / "final" / f"{name}.parquet", columns=["id"])
        rows = pd.read_parquet(final / "final" / "metadata" / f"{name}.parquet")
        assert rows["id"].tolist() == records["id"].tolist() == sorted(records["id"])
        assert pq.read_schema(final / "final" / "metadata" / f"{name}.parquet") == pq.read_schema(chain / "metadata" / f"{name}.parquet")
        assert metrics["metadata_rows"][name] == len(records)
    prepared = pq.read_schema(chain / "metadata" / "train.parquet")
    assert [prepared.field(n).type for n in prepared.names[1:]] == [pa.int8()] * 4 + [pa.float64(), pa.int8()]


def test_a_generated_record_takes_its_root_originals_row_bit_for_bit(chain, final):
    records = read_records(final / "final" / "train.parquet", columns=["id", "parent_id", "op"])
    rows = pd.read_parquet(final / "final" / "metadata" / "train.parquet")
    prepared = pd.read_parquet(chain / "metadata" / "train.parquet").set_index("id")
    ops = records["op"].dropna().map(lambda op: json.loads(op)["op"])
    copies = records.loc[ops[ops == "oversample"].index]
    variant_ids = set(records.loc[ops[ops != "oversample"].index, "id"])
    assert len(variant_ids) > 0 and len(copies) > 0
    assert any(json.loads(op)["copy_of"] in variant_ids for op in copies["op"])  # a copy of a variant: its root is the variant's parent
    assert set(records["parent_id"].dropna()) <= set(prepared.index)  # every root is a prepared train record
    roots = records["parent_id"].where(records["parent_id"].notna(), records["id"])
    expected = prepared.loc[roots].reset_index(drop=True)
    expected.insert(0, "id", records["id"].to_numpy(object))
    assert _bits(rows) == _bits(expected)
    assert rows["confidence__missing"].sum() > 0 and rows["confidence"].notna().all()


def test_the_exported_fitted_json_prepares_raw_metadata_as_the_final_tables_hold_it(chain, final):
    """What a served model does: read final/metadata/fitted.json and apply it to a record's raw
    metadata; it gets the row the final table holds, bit for bit."""
    exported = final / "final" / "metadata" / "fitted.json"
    assert exported.read_bytes() == (chain / "metadata" / "fitted.json").read_bytes()
    fitted = from_json(exported.read_text())
    for name in ("val", "test"):
        records = read_records(final / "final" / f"{name}.parquet", columns=["id", "metadata"])
        assert _bits(record_features(records, fitted)) == _bits(pd.read_parquet(final / "final" / "metadata" / f"{name}.parquet"))


def test_val_and_test_are_prepares_tables(chain, final):
    for name in ("val", "test"):
        written, prepared = final / "final" / "metadata" / f"{name}.parquet", chain / "metadata" / f"{name}.parquet"
        assert _bits(pd.read_parquet(written)) == _bits(pd.read_parquet(prepared))
        assert written.read_bytes() == prepared.read_bytes()  # one row group, written as prepare writes


def test_any_partitioning_gives_the_same_bytes(chain, final, tmp_path):
    assert _rebalance(chain, tmp_path / "pieces", engine={"partition_rows": 5, "workers": 1}) == 0
    assert _files(tmp_path / "pieces" / "final" / "metadata") == _files(final / "final" / "metadata")


def test_row_groups_depend_on_the_rows_alone(tmp_path):
    schema = pa.schema([("id", pa.string()), ("x", pa.float64()), ("flag", pa.int8())])
    frame = pd.DataFrame({"id": [f"{i:016x}" for i in range(23)], "x": np.linspace(-1, 1, 23), "flag": np.arange(23, dtype=np.int8) % 2})
    written = []
    for cuts in ([0, 23], [0, 3, 3, 11, 12, 23], [0, 1, 2, 7, 8, 9, 20, 23]):
        paths = [write_table_spill(frame.iloc[a:b], tmp_path / f"{len(written)}-{k}.parquet", schema) for k, (a, b) in enumerate(itertools.pairwise(cuts))]
        target = tmp_path / f"out-{len(written)}.parquet"
        assert write_table_chunks(row_groups(paths, schema, rows=4), target) == 23
        written.append(target.read_bytes())
        meta = pq.read_metadata(target)
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4] * 5 + [3]
    assert written[0] == written[1] == written[2]
    empty = tmp_path / "empty.parquet"
    assert write_table_chunks(row_groups([write_table_spill(frame.iloc[0:0], tmp_path / "e.parquet", schema)], schema), empty) == 0
    assert pq.read_schema(empty) == schema


def test_a_dataset_without_metadata_gets_tables_of_ids_as_prepare_writes_them(chain, tmp_path):
    """prepare writes tables of ids alone for a dataset without metadata columns; so does rebalance,
    one row per final record, so the same dvc.yaml outs hold for every dataset."""
    ids_only = tmp_path / "ids_only"
    ids_only.mkdir()
    for split in SPLITS:
        pq.write_table(pq.read_table(chain / "metadata" / f"{split}.parquet", columns=["id"]), ids_only / f"{split}.parquet")
    assert _rebalance(chain, tmp_path / "run", metadata=False, features=ids_only) == 0
    for split in SPLITS:
        table = pq.read_table(tmp_path / "run" / "final" / "metadata" / f"{split}.parquet")
        records = read_records(tmp_path / "run" / "final" / f"{split}.parquet", columns=["id"])
        assert table.column_names == ["id"] and table.column("id").to_pylist() == records["id"].tolist()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["metadata_rows"]["train"] == len(
        read_records(tmp_path / "run" / "final" / "train.parquet", columns=["id"]))


def test_declared_metadata_without_features_warns_and_missing_features_fail_before_any_work(chain, tmp_path, stage_log):
    assert _rebalance(chain, tmp_path, pass_features=False) == 0
    assert "declares metadata columns but no --metadata" in stage_log.text and not (tmp_path / "final" / "metadata").exists()
    assert "metadata_rows" not in json.loads((tmp_path / "metrics.json").read_text())
    assert _rebalance(chain, tmp_path / "elsewhere", features=tmp_path / "nowhere") == 1
    assert not (tmp_path / "elsewhere" / "final").exists()
    assert f"no prepared features at {tmp_path / 'nowhere' / 'train.parquet'}" in stage_log.text


def test_a_root_without_a_features_row_fails_naming_the_record(chain, final, tmp_path, stage_log):
    records = read_records(final / "final" / "train.parquet", columns=["id", "parent_id"])
    generated = records[records["parent_id"].notna()].iloc[0]
    features = tmp_path / "metadata"
    shutil.copytree(chain / "metadata", features)
    table = pq.read_table(features / "train.parquet")
    pq.write_table(table.filter(pc.not_equal(table.column("id"), generated["parent_id"])), features / "train.parquet")
    assert _rebalance(chain, tmp_path / "out", features=features) == 1
    assert f"has no row for record {generated['parent_id']!r}, the root of record " in stage_log.text
    assert "Traceback" not in stage_log.text and not (tmp_path / "out" / "final" / "metadata").exists()


@pytest.mark.slow
def test_a_dask_cluster_writes_the_same_bytes(chain, final, tmp_path):
    engine = {"kind": "dask", "partition_rows": 7, "dask": {"workers": 2, "memory_limit": "1GB"}}
    assert _rebalance(chain, tmp_path, engine=engine) == 0
    assert _files(tmp_path / "final" / "metadata") == _files(final / "final" / "metadata")
    assert json.loads((tmp_path / "metrics.json").read_text())["metadata_rows"] == json.loads((final / "metrics.json").read_text())["metadata_rows"]
