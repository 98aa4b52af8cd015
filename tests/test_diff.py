"""The data diff between two dataset versions, and its gate on how much of test changed."""
from __future__ import annotations

import pandas as pd

from conftest import text_records
from pipeline.diff import DatasetDiff, diff_split, grown_drops, markdown, violated


def test_added_removed_and_changed_records_with_class_shift():
    before = text_records([("a", "one"), ("a", "two"), ("b", "three")])
    after = before.copy()
    after.loc[0, "label"] = "b"                                    # changed label
    after.loc[1, ["text", "content_hash"]] = ["two!", "other"]     # changed content
    after = after.drop(index=2)                                    # removed
    after = pd.concat([after, text_records([("c", "four")]).assign(id="new-id")], ignore_index=True)  # added
    diff = diff_split("test", before, after)
    assert diff.added == ["new-id"] and diff.removed == [before["id"].iloc[2]]
    assert diff.changed == sorted(before["id"].iloc[:2]) and diff.changed_fraction == 4 / 3
    assert diff.classes_before == {"a": 2, "b": 1} and diff.classes_after == {"a": 1, "b": 1, "c": 1}
    assert {kind for kind, _, _ in diff.examples} == {"added", "removed", "changed"}


def test_grown_drop_reasons_only():
    before = {"clean": {"dropped": {"empty_text": 2, "too_long": 5}}}
    after = {"clean": {"dropped": {"empty_text": 4, "too_long": 1, "wrong_language": 3}}}
    assert grown_drops(before, after) == [("clean", "empty_text", 2, 4), ("clean", "wrong_language", 0, 3)]


def test_gate_on_changed_test_share_and_markdown():
    records = text_records([("a", f"text {i}") for i in range(100)])
    changed = records.copy()
    changed.loc[:2, "label"] = "b"  # 3 of 100 test records changed
    diffs = [DatasetDiff("d", [diff_split("train", records, records), diff_split("val", records, records),
                              diff_split("test", records, changed)], [("clean", "empty_text", 0, 2)], "v1", "v2")]
    assert violated(diffs, 0.02) == ["d"] and violated(diffs, 0.05) == [] and violated(diffs, None) == []
    text = markdown(diffs, "main", "workspace", 0.02)
    assert "| test | 100 | 100 | 0 | 0 | 3 | 3.00% |" in text and "**VIOLATED**" in text and "`empty_text` 0 -> 2" in text
