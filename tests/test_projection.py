"""The embedding projection: the same picture from the same vectors, the cap, and the report section."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import text_records, write_params
from test_report import CARD, LEAKAGE, METRICS, _stage_inputs

from pipeline.io import features_table, write_records, write_table
from pipeline.records import make_id
from pipeline.report import plots
from pipeline.report.page import ReportInputs, render
from pipeline.report.projection import drawn, project, projection

SPLIT_OF = np.array(["train"] * 8 + ["val", "test"])


def _records(n: int, classes: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """`n` records of `classes` clusters in 32 dimensions, train, val and test 8:1:1."""
    rng = np.random.default_rng(7)
    labels = np.arange(n) % classes
    vectors = (rng.normal(size=(classes, 32)) * 3)[labels] + rng.normal(size=(n, 32))
    frame = pd.DataFrame({"id": [make_id("p", i) for i in range(n)], "label": [f"c{k}" for k in labels],
                          "split": SPLIT_OF[np.arange(n) % 10]})
    return frame, vectors.astype(np.float32)


def _picture(frame: pd.DataFrame, vectors: np.ndarray, **marks) -> bytes:
    marks = {"issues": set(), "leaks": [], **marks}
    return plots.embedding_projection(projection(frame, vectors, total=len(frame), **marks))


def test_the_same_vectors_give_the_same_png_twice():
    frame, vectors = _records(300)
    leaks = [(frame["id"][9], frame["id"][0])]
    first = _picture(frame, vectors, issues={frame["id"][4]}, leaks=leaks)
    assert first.startswith(b"\x89PNG") and first == _picture(frame.copy(), vectors.copy(), issues={frame["id"][4]}, leaks=leaks)


def test_row_order_does_not_change_the_picture():
    frame, vectors = _records(300)
    shuffled = np.random.default_rng(1).permutation(len(frame))
    a = projection(frame, vectors, issues={frame["id"][3]}, leaks=[], total=300)
    b = projection(frame.iloc[shuffled].reset_index(drop=True), vectors[shuffled], issues={frame["id"][3]}, leaks=[], total=300)
    assert list(a.ids) == list(b.ids) and np.array_equal(a.xy, b.xy) and list(a.issues) == list(b.issues)
    assert _picture(frame, vectors) == _picture(frame.iloc[shuffled].reset_index(drop=True), vectors[shuffled])


def test_negated_vectors_give_the_same_coordinates():
    frame, vectors = _records(200)
    xy, variance = project(frame["id"], vectors)
    flipped, flipped_variance = project(frame["id"], -vectors)
    assert np.array_equal(xy, flipped) and variance == flipped_variance
    assert xy.shape == (200, 2) and np.array_equal(xy, np.round(xy, 4))
    peaks = np.abs(xy).argmax(axis=0)
    assert (xy[peaks, [0, 1]] > 0).all()  # each axis points to its largest coordinate


def test_the_cap_keeps_every_marked_record_and_chooses_by_id():
    ids = [make_id("cap", i) for i in range(5_000)]
    marked = set(ids[::97])
    keep = drawn(ids, marked, cap=1_000)
    assert keep.sum() == 1_000 and all(keep[i] for i, key in enumerate(ids) if key in marked)
    reversed_keep = drawn(ids[::-1], marked, cap=1_000)[::-1]
    assert np.array_equal(keep, reversed_keep)  # the choice follows the ids, not their order
    many = set(ids[:900])
    crowded = drawn(ids, many, cap=1_000)
    assert all(crowded[:900]) and crowded.sum() == 900 + 500  # marks past the cap still keep half a cap of context
    assert drawn(ids[:10], set(), cap=1_000).all()


def test_a_capped_picture_says_how_many_records_it_draws():
    frame, vectors = _records(60, classes=20)
    keep = drawn(frame["id"], {frame["id"][59]}, cap=40)
    shown = projection(frame[keep].reset_index(drop=True), vectors[keep], issues={frame["id"][59]}, leaks=[], total=60)
    page = render(ReportInputs("demo", "text", CARD, LEAKAGE, METRICS, [], {"ingest": {"a": 1}}, projection=shown))
    section = page.split("id='projection'")[1].split("</section>")[0]
    assert "40 of the 60 records" in section and "colours from a colour map, no legend" in section
    assert "1 label issues (1 listed" in section and "no semantic section" in section and "data:image/png;base64," in section


# --- the stage ------------------------------------------------------------------------------

def _write_dataset(data: Path, n: int) -> pd.DataFrame:
    """Final splits of `n` originals and one generated train record, their embeddings (the
    originals only), two label issues and a semantic leak."""
    frame, vectors = _records(n)
    records = text_records([(label, f"text {i}") for i, label in enumerate(frame["label"])])
    records["id"] = frame["id"]
    copy = records.iloc[[0]].assign(id=make_id("copy", 0), parent_id=records["id"][0])
    for split in ("train", "val", "test"):
        rows = pd.concat([records[frame["split"] == split], *([copy] if split == "train" else [])])
        write_records(rows, data / "final" / f"{split}.parquet")
    write_table(features_table(frame, vectors), data / "embeddings.parquet")
    issues = pd.DataFrame({"rank": [1, 2], "id": frame["id"][:2], "given_label": "c0", "suggested_label": "c1", "self_confidence": 0.01})
    issues.to_parquet(data / "label_issues.parquet")
    return frame


def _report_section(tmp_path: Path) -> str:
    from pipeline.stages import report

    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "x.tsv", "format": "tsv"}},
                          gates={"warn_only": True})
    out = tmp_path / "report.html"
    report.main(["--dataset", "t", "--params", str(params), "--data", str(tmp_path / "data"), "--stage-metrics",
                 str(tmp_path / "metrics"), "--output", str(out), "--metrics", str(tmp_path / "report.json")])
    return out.read_text().split("id='projection'")[1].split("</section>")[0]


def test_the_report_draws_the_embedded_records_with_their_marks(tmp_path):
    data, _ = _stage_inputs(tmp_path)
    frame = _write_dataset(data, 50)
    leak = {"split": "test", "id": frame["id"][9], "other_split": "train", "other_id": frame["id"][0], "cosine": 0.97}
    (data / "final" / "leakage.json").write_text(json.dumps({**LEAKAGE, "semantic": {"threshold": 0.9, "method": "cosine",
                                                                                    "leaks": 1, "pairs": [leak]}}))
    section = _report_section(tmp_path)
    assert "data:image/png;base64," in section and "all 50 records" in section  # the generated copy has no embedding
    assert "2 label issues (2 listed" in section and "1 semantic leaks (1 in the leakage certificate)" in section


@pytest.mark.parametrize("records, reason", [(None, "embeddings.parquet was not found"), (2, "2 record(s) of the final splits")])
def test_the_report_says_why_it_has_no_projection(tmp_path, records, reason):
    data, _ = _stage_inputs(tmp_path)
    if records is not None:
        _write_dataset(data, records)
    section = _report_section(tmp_path)
    assert reason in section and "<img" not in section
