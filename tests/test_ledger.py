"""Ledger: every record's fate in a stage, and an account that must balance."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import pytest

from pipeline.ledger import LEDGER_SCHEMA, Fates, Ledger, UnbalancedError


def rows(ledger: Ledger) -> list[dict]:
    return ledger.table().to_pylist()


def test_drop_with_one_reason_and_details():
    ledger = Ledger("clean")
    ledger.record(Fates.dropped(["b", "a"], "empty_text", ["0 chars", "1 chars"]))
    assert rows(ledger) == [
        {"stage": "clean", "id": "a", "fate": "dropped", "reason": "empty_text", "into": None, "parent_id": None, "detail": "1 chars"},
        {"stage": "clean", "id": "b", "fate": "dropped", "reason": "empty_text", "into": None, "parent_id": None, "detail": "0 chars"},
    ]


def test_drop_with_a_reason_per_id():
    ledger = Ledger("clean")
    ledger.record(Fates.dropped(["a", "b", "c"], ["too_short", "empty_text", "too_short"]))
    assert ledger.count("dropped") == {"too_short": 2, "empty_text": 1}
    assert all(r["detail"] is None for r in rows(ledger))


def test_drop_accepts_iterables_such_as_series():
    ledger = Ledger("clean")
    ledger.record(Fates.dropped(pd.Series(["a", "b"]), pd.Series(["x", "y"]), pd.Series(["d1", "d2"])))
    assert [(r["id"], r["reason"], r["detail"]) for r in rows(ledger)] == [("a", "x", "d1"), ("b", "y", "d2")]


@pytest.mark.parametrize("call", [
    lambda: Fates.dropped(["a", "b"], ["only_one"]),
    lambda: Fates.dropped(["a", "b"], "r", ["only one detail"]),
    lambda: Fates.merged(["a", "b"], ["s"], "duplicate"),
    lambda: Fates.generated(["a"], ["p", "q"], "augmented"),
    lambda: Fates.flagged(["a", "b"], "r", ["one"]),
])
def test_mismatched_lengths_raise_instead_of_truncating(call):
    with pytest.raises(ValueError, match="give one per id"):
        call()


def test_merge_names_the_survivor():
    ledger = Ledger("dedup")
    ledger.record(Fates.merged(["b", "c"], ["a", "a"], "exact_duplicate"))
    assert [(r["id"], r["fate"], r["reason"], r["into"]) for r in rows(ledger)] == [
        ("b", "merged", "exact_duplicate", "a"),
        ("c", "merged", "exact_duplicate", "a"),
    ]


def test_generate_names_the_parent():
    ledger = Ledger("augment")
    ledger.record(Fates.generated(["x1", "x2"], ["a", "b"], "augmented"))
    assert [(r["id"], r["fate"], r["parent_id"], r["into"]) for r in rows(ledger)] == [
        ("x1", "generated", "a", None),
        ("x2", "generated", "b", None),
    ]


def test_flag_keeps_details():
    ledger = Ledger("dedup")
    ledger.record(Fates.flagged(["a"], "label_conflict", ["labels: x, y"]))
    assert rows(ledger)[0] == {
        "stage": "dedup", "id": "a", "fate": "flagged", "reason": "label_conflict",
        "into": None, "parent_id": None, "detail": "labels: x, y",
    }


def test_account_balances_and_reports_counts():
    ledger = Ledger("dedup")
    ledger.record(Fates.dropped(["d1", "d2", "d3"], ["empty_text", "too_short", "empty_text"]))
    ledger.record(Fates.merged(["m1"], ["s1"], "exact_duplicate"))
    ledger.record(Fates.generated(["g1", "g2"], ["s1", "s2"], "augmented"))
    ledger.record(Fates.flagged(["s1"], "label_conflict"))  # flagged records still count as out
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
    ledger.record(Fates.dropped(["a"], "empty_text"))
    with pytest.raises(UnbalancedError, match=rf"stage clean: in {n_in} \+ generated 0 != out {n_out}"):
        ledger.account(n_in=n_in, n_out=n_out)


def test_table_is_sorted_by_fate_reason_id_and_has_the_schema():
    ledger = Ledger("s")
    ledger.record(Fates.merged(["z"], ["a"], "dup"))
    ledger.record(Fates.dropped(["c", "a"], "too_short"))
    ledger.record(Fates.generated(["g"], ["a"], "aug"))
    ledger.record(Fates.dropped(["b"], "empty_text"))
    ledger.record(Fates.flagged(["f"], "odd"))
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
    first.record(Fates.dropped(["a", "b"], ["x", "y"]))
    first.record(Fates.merged(["c"], ["a"], "dup"))
    second.record(Fates.merged(["c"], ["a"], "dup"))
    second.record(Fates.dropped(["b"], "y"))
    second.record(Fates.dropped(["a"], "x"))
    assert first.table().equals(second.table())


def test_empty_table_has_the_schema():
    table = Ledger("s").table()
    assert table.schema == LEDGER_SCHEMA
    assert table.num_rows == 0


@pytest.mark.parametrize("missing", [None, math.nan, pd.NA, pd.NaT])
def test_missing_details_become_null(missing):
    ledger = Ledger("s")
    ledger.record(Fates.dropped(["a"], "r", [missing]))
    ledger.record(Fates.flagged(["b"], "r", [missing]))
    assert [r["detail"] for r in rows(ledger)] == [None, None]


def test_non_text_details_become_text():
    ledger = Ledger("s")
    ledger.record(Fates.dropped(["a", "b"], "r", pd.Series([3, None], dtype="Int64")))
    assert [r["detail"] for r in rows(ledger)] == ["3", None]


def test_verdicts_become_drops_at_their_location_and_flags_of_kept_records():
    @dataclass
    class Verdict:
        reason: str | None = None
        detail: str | None = None
        flags: tuple = ()

    verdicts = [Verdict("too_short", "3 chars"), Verdict(flags=(("blurry", "12 < 45"), ("grayscale", "0 < 2"))),
                Verdict("corrupt_image"), Verdict(flags=())]
    fates = Fates.from_verdicts(["a", "b", "c", "d"], verdicts, ["f.tsv:2", "f.tsv:3", "img/c.png", "f.tsv:5"])
    ledger = Ledger("s")
    ledger.record(fates)
    assert [(r["id"], r["fate"], r["reason"], r["detail"]) for r in rows(ledger)] == [
        ("c", "dropped", "corrupt_image", "img/c.png"),
        ("a", "dropped", "too_short", "f.tsv:2: 3 chars"),
        ("b", "flagged", "blurry", "12 < 45"),
        ("b", "flagged", "grayscale", "0 < 2"),
    ]
    assert ledger.account(n_in=4, n_out=2)["flagged"] == {"blurry": 1, "grayscale": 1}


def test_fates_add_up_and_an_empty_one_adds_nothing():
    both = Fates.dropped(["a"], "r") + Fates() + Fates.merged(["b"], ["a"], "dup")
    assert len(both) == 2 and both.of("merged")["into"].tolist() == ["a"] and len(Fates() + Fates()) == 0
