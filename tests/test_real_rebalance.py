"""Issue 5's checks on the SMS corpus: rebalance to 1:1 in train only, lineage intact, and the same
bytes from two runs and from a different worker count. Runs the data stages in process."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import SHARED, write_params
from contract import final_splits, leaks, unbalanced
from pipeline.stages import augment, clean, dedup, normalise, rebalance, split

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not found at {SHARED} (present beside the checkout in CI)"),
]
SMS = {"sms": {"modality": "text", "source": str(SHARED / "sms_spam" / "SMSSpamCollection"), "format": "tsv",
               "columns": {"text": "SMS", "label": "Label"}, "labels": ["ham", "spam"]}}


def run_data_stages(root: Path, workers: int) -> Path:
    params = write_params(root / "params.yaml", SMS, engine={"workers": workers, "chunk_size": 512},
                          augment={"text": {"classes": ["spam"]}}, rebalance={"strategy": "random_over", "ratio": 1.0})
    d, m = root / "data", root / "metrics" / "sms"

    def call(module, name: str, *args: str) -> None:
        code = module.main(["--dataset", "sms", "--params", str(params), "--metrics", str(m / f"{name}.json"),
                            "--ledger", str(d / "ledger" / f"{name}.parquet"), *args])
        assert code == 0, name

    call(clean, "clean", "--output", str(d / "clean.parquet"))
    call(normalise, "normalise", "--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet"))
    call(dedup, "dedup", "--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet"))
    call(split, "split", "--input", str(d / "dedup.parquet"), "--output", str(d / "split"), "--leakage", str(d / "final" / "leakage.json"))
    call(augment, "augment", "--input", str(d / "split"), "--output", str(d / "augment" / "train.parquet"), "--preview", str(d / "preview"))
    call(rebalance, "rebalance", "--train", str(d / "augment" / "train.parquet"), "--split", str(d / "split"), "--output", str(d / "final"))
    return root


def digests(root: Path) -> dict[str, str]:
    files = sorted(p for p in (root / "data").rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    return tuple(run_data_stages(tmp_path_factory.mktemp(name), workers) for name, workers in (("a", 1), ("b", 1), ("c", 2)))


def test_train_is_balanced_one_to_one_and_only_train_grows(runs):
    root = runs[0]
    final = final_splits(root / "data" / "final")
    counts = Counter(final["train"]["label"])
    assert counts["ham"] == counts["spam"]
    card = json.loads((root / "data" / "final" / "card.json").read_text())
    assert card["generated"]["val"] == card["generated"]["test"] == 0 and card["generated"]["train"] > 0


def test_lineage_and_groups_hold(runs):
    root = runs[0]
    assert leaks(root / "data" / "final") == []
    assert unbalanced(root / "metrics") == []


def test_two_runs_and_two_workers_give_the_same_bytes(runs):
    first, second, parallel = (digests(r) for r in runs)
    assert first == second
    assert first == parallel
