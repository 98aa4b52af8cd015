"""Ledger: every record's fate in a stage, and an account that must balance."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.ledger import LEDGER_SCHEMA, Ledger, UnbalancedError


def rows(ledger: Ledger) -> list[dict]:
    return ledger.table().to_pylist()


def test_drop_with_one_reason_and_details():
    ledger = Ledger("clean")
    ledger.drop(["b", "a"], "empty_text", ["0 chars", "1 chars"])
    assert rows(ledger) == [
        {"stage": "clean", "id": "a", "fate": "dropped", "reason": "empty_text", "into": None, "parent_id": None, "detail": "1 chars"},
        {"stage": "clean", "id": "b", "fate": "dropped", "reason": "empty_text", "into": None, "parent_id": None, "detail": "0 chars"},
    ]


def test_drop_with_a_reason_per_id():
    ledger = Ledger("clean")
    ledger.drop(["a", "b", "c"], ["too_short", "empty_text", "too_short"])
    assert ledger.count("dropped") == {"too_short": 2, "empty_text": 1}
    assert all(r["detail"] is None for r in rows(ledger))


def test_drop_accepts_iterables_such_as_series():
    ledger = Ledger("clean")
    ledger.drop(pd.Series(["a", "b"]), pd.Series(["x", "y"]), pd.Series(["d1", "d2"]))
    assert [(r["id"], r["reason"], r["detail"]) for r in rows(ledger)] == [("a", "x", "d1"), ("b", "y", "d2")]


@pytest.mark.parametrize("call", [
    lambda ledger: ledger.drop(["a", "b"], ["only_one"]),
    lambda ledger: ledger.drop(["a", "b"], "r", ["only one detail"]),
    lambda ledger: ledger.merge(["a", "b"], ["s"], "duplicate"),
    lambda ledger: ledger.generate(["a"], ["p", "q"], "augmented"),
    lambda ledger: ledger.flag(["a", "b"], "r", ["one"]),
])
def test_mismatched_lengths_raise_instead_of_truncating(call):
    with pytest.raises(ValueError):
        call(Ledger("s"))


def test_merge_names_the_survivor():
    ledger = Ledger("dedup")
    ledger.merge(["b", "c"], ["a", "a"], "exact_duplicate")
    assert [(r["id"], r["fate"], r["reason"], r["into"]) for r in rows(ledger)] == [
        ("b", "merged", "exact_duplicate", "a"),
        ("c", "merged", "exact_duplicate", "a"),
    ]


def test_generate_names_the_parent():
    ledger = Ledger("augment")
    ledger.generate(["x1", "x2"], ["a", "b"], "augmented")
    assert [(r["id"], r["fate"], r["parent_id"], r["into"]) for r in rows(ledger)] == [
        ("x1", "generated", "a", None),
        ("x2", "generated", "b", None),
    ]


def test_flag_keeps_details():
    ledger = Ledger("dedup")
    ledger.flag(["a"], "label_conflict", ["labels: x, y"])
    assert rows(ledger)[0] == {
        "stage": "dedup", "id": "a", "fate": "flagged", "reason": "label_conflict",
        "into": None, "parent_id": None, "detail": "labels: x, y",
    }


def test_account_balances_and_reports_counts():
    ledger = Ledger("dedup")
    ledger.drop(["d1", "d2", "d3"], ["empty_text", "too_short", "empty_text"])
    ledger.merge(["m1"], ["s1"], "exact_duplicate")
    ledger.generate(["g1", "g2"], ["s1", "s2"], "augmented")
    ledger.flag(["s1"], "label_conflict")  # flagged records still count as out
    metrics = ledger.account(n_in=10, n_out=8, extra={"clusters": 1})
    assert metrics == {
        "in": 10,
        "out": 8,
        "generated": 2,
        "merged": 1,
        "dropped": {"empty_text": 2, "too_short": 1},
        "flagged": {"label_conflict": 1},
        "clusters": 1,
    }
    assert list(metrics["dropped"]) == ["empty_text", "too_short"]  # sorted for stable metrics files


def test_account_of_a_stage_that_changes_nothing():
    metrics = Ledger("s").account(n_in=5, n_out=5)
    assert metrics == {"in": 5, "out": 5, "generated": 0, "merged": 0, "dropped": {}}
    assert "flagged" not in metrics


@pytest.mark.parametrize("n_in, n_out", [(10, 8), (10, 6), (0, 1)])
def test_unbalanced_account_raises(n_in, n_out):
    ledger = Ledger("clean")
    ledger.drop(["a"], "empty_text")
    with pytest.raises(UnbalancedError, match=rf"stage clean: in {n_in} \+ generated 0 != out {n_out}"):
        ledger.account(n_in=n_in, n_out=n_out)


def test_table_is_sorted_by_fate_reason_id_and_has_the_schema():
    ledger = Ledger("s")
    ledger.merge(["z"], ["a"], "dup")
    ledger.drop(["c", "a"], "too_short")
    ledger.generate(["g"], ["a"], "aug")
    ledger.drop(["b"], "empty_text")
    ledger.flag(["f"], "odd")
    table = ledger.table()
    assert table.schema == LEDGER_SCHEMA
    assert [(r["fate"], r["reason"], r["id"]) for r in table.to_pylist()] == [
        ("dropped", "empty_text", "b"),
        ("dropped", "too_short", "a"),
        ("dropped", "too_short", "c"),
        ("flagged", "odd", "f"),
        ("generated", "aug", "g"),
        ("merged", "dup", "z"),
    ]


def test_table_does_not_depend_on_call_order():
    first, second = Ledger("s"), Ledger("s")
    first.drop(["a", "b"], ["x", "y"])
    first.merge(["c"], ["a"], "dup")
    second.merge(["c"], ["a"], "dup")
    second.drop(["b"], "y")
    second.drop(["a"], "x")
    assert first.table().equals(second.table())


def test_empty_table_has_the_schema():
    table = Ledger("s").table()
    assert table.schema == LEDGER_SCHEMA
    assert table.num_rows == 0


@pytest.mark.parametrize("missing", [None, math.nan, pd.NA, pd.NaT])
def test_missing_details_become_null(missing):
    ledger = Ledger("s")
    ledger.drop(["a"], "r", [missing])
    ledger.flag(["b"], "r", [missing])
    assert [r["detail"] for r in rows(ledger)] == [None, None]


def test_non_text_details_become_text():
    ledger = Ledger("s")
    ledger.drop(["a", "b"], "r", pd.Series([3, None], dtype="Int64"))
    assert [r["detail"] for r in rows(ledger)] == ["3", None]
