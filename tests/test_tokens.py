"""Token budgets: the fine-tuning tokenizer's counts, clean's token bounds and rebalance's `tokens` metrics.

Everything runs the packaged all-MiniLM-L6-v2 tokenizer itself on real Parquet record sets: counts
must be the tokenizer's own, drops must carry their reasons into the ledger and the metrics, the
distribution must not depend on partitions, and without a token bound clean never loads a tokenizer.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, text_records, write_params
from pipeline.io import read_records, write_records
from pipeline.params import GatesParams, TextCleanParams
from pipeline.report.gates import evaluate_gates
from pipeline.report.page import TOKEN_CLASS_ROWS, ReportInputs, render
from pipeline.stages import clean, rebalance
from pipeline.steps.clean import clean_texts, token_problem
from pipeline.steps.tokens import BATCH, TokenCounter, summary, token_histogram, token_summary
from pipeline.tokenizer import default_text_model, load_tokenizer

TSV = {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}
LONG = " ".join(f"word{i} parcel invoice" for i in range(250))  # about 1,000 tokens, past the model's 512
TEXTS = ["hello", "Where is my parcel? It was due on Monday.", "naïve café 東京 🙂", "  spaced   out  ", LONG,
         "refund " * 70, "x"]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.load(None)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(default_text_model())


# --- counting -------------------------------------------------------------------------------

def test_counts_are_the_tokenizers_own_encode_with_special_tokens(counter, tokenizer):
    expected = [len(tokenizer.encode(text)) for text in TEXTS]  # encode adds [CLS] and [SEP]
    assert counter(TEXTS).tolist() == expected
    assert expected[0] == 3 and expected[4] > 512  # nothing truncated, not even at the model's own limit


def test_longer_than_max_length_is_exactly_what_finetune_truncates(counter, tokenizer):
    """finetune tokenizes with truncation at max_length: a text loses tokens there iff its count is above it."""
    max_length = 16
    truncated = tokenizer(TEXTS, truncation=True, max_length=max_length)["input_ids"]
    counts = counter(TEXTS)
    assert [len(ids) for ids in truncated] == np.minimum(counts, max_length).tolist()
    assert any(counts > max_length) and any(counts <= max_length)


def test_counts_do_not_depend_on_the_batch(counter, tokenizer):
    texts = [f"order {i} " * (1 + i % 7) for i in range(2 * BATCH + 37)]
    assert counter(texts).tolist() == [len(tokenizer.encode(t)) for t in texts]
    assert counter([]).tolist() == []


# --- the distribution -----------------------------------------------------------------------

def test_summary_quantiles_are_nearest_rank():
    tokens = np.arange(1, 101)
    got = summary(tokens, np.ones(100, dtype=int), max_length=64)
    assert got == {"count": 100, "mean": 50.5, "p50": 50, "p90": 90, "p99": 99, "max": 100, "over_max_length": 0.36}
    for q in (50, 90, 99):
        assert got[f"p{q}"] == int(np.percentile(tokens, q, method="inverted_cdf"))
    weighted = summary([10, 3, 70], [1, 8, 1], max_length=64)  # unsorted, with counts
    assert weighted == {"count": 10, "mean": 10.4, "p50": 3, "p90": 10, "p99": 70, "max": 70, "over_max_length": 0.1}
    assert summary([], [], max_length=64) == {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None,
                                              "max": None, "over_max_length": None}


def _labelled(n: int = 150) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    words = "invoice parcel refund courier depot charge account delivery monday".split()
    rows = [(str(rng.choice(["billing", "shipping", "tech"])), " ".join(rng.choice(words, int(rng.integers(1, 40)))))
            for _ in range(n)]
    return text_records(rows)


def test_summary_is_the_same_whatever_the_partitions(counter):
    """Histograms of any cut of the records sum to the same summary; quantiles come from the sum."""
    records = _labelled()
    whole = token_summary(token_histogram(records, counter=counter, split="train"), max_length=12, splits=["train"])
    for cuts in ([1] * 150, [7] * 21 + [3], [100, 1, 49]):
        bounds = np.cumsum([0, *cuts])
        parts = [token_histogram(records.iloc[a:b], counter=counter, split="train") for a, b in zip(bounds, bounds[1:])]
        assert token_summary(pd.concat(parts), max_length=12, splits=["train"]) == whole
    counts = counter(records["text"])
    assert whole["train"]["count"] == 150 and whole["train"]["max"] == counts.max()
    assert whole["train"]["over_max_length"] == round(float((counts > 12).mean()), 6)
    shipping = records["label"] == "shipping"
    assert whole["train"]["per_class"]["shipping"]["count"] == shipping.sum()
    assert whole["train"]["per_class"]["shipping"]["max"] == counts[shipping.to_numpy()].max()


def _rebalance(root: Path, out: Path, partition_rows: int) -> dict:
    out.mkdir(parents=True)
    params = write_params(out / "params.yaml", TSV, rebalance={"strategy": "none"}, engine={"partition_rows": partition_rows},
                          finetune={"text": {"max_length": 12}})
    assert rebalance.main(["--dataset", "t", "--params", str(params), "--train", str(root / "augment" / "train.parquet"),
                           "--split", str(root / "split"), "--output", str(out / "final"),
                           "--ledger", str(out / "ledger.parquet"), "--metrics", str(out / "metrics.json")]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_rebalance_metrics_give_the_final_splits_tokens_from_any_partitions(tmp_path, counter):
    records = _labelled()
    write_records(records.iloc[:110], tmp_path / "augment" / "train.parquet")
    write_records(records.iloc[110:130], tmp_path / "split" / "val.parquet")
    write_records(records.iloc[130:], tmp_path / "split" / "test.parquet")
    whole = _rebalance(tmp_path, tmp_path / "whole", 100_000)["tokens"]
    assert _rebalance(tmp_path, tmp_path / "pieces", 4)["tokens"] == whole
    assert whole["max_length"] == 12
    for split in ("train", "val", "test"):
        final = read_records(tmp_path / "whole" / "final" / f"{split}.parquet")
        counts = counter(final["text"])
        assert whole[split] == {**summary(counts, np.ones(len(counts), dtype=int), max_length=12), "per_class": whole[split]["per_class"]}
        assert sum(v["count"] for v in whole[split]["per_class"].values()) == len(final)


# --- clean's token bounds -------------------------------------------------------------------

def test_token_bounds_drop_with_reason_and_detail(counter):
    params = TextCleanParams(min_tokens=4, max_tokens=13)
    verdicts = clean_texts(["hello", "Where is my parcel? It was due on Monday.", LONG, None, "   "], params, counter)
    assert [v.reason for v in verdicts] == ["too_few_tokens", None, "too_many_tokens", "missing_text", "empty_text"]
    assert verdicts[0].detail == "3 tokens < 4" and verdicts[2].detail == f"{counter([LONG])[0]} tokens > 13"
    assert verdicts[1].text and verdicts[2].text is None
    assert token_problem(13, params) is None and token_problem(4, params) is None


def test_token_bounds_need_a_counter_and_only_then():
    assert [v.reason for v in clean_texts(["hello"], TextCleanParams())] == [None]
    with pytest.raises(ValueError, match="count_tokens"):
        clean_texts(["hello"], TextCleanParams(max_tokens=5))


def _corpus(root: Path) -> list[str]:
    texts = ["hi", "ok then", "the parcel never came and nobody answers the phone", "refund please",
             "where is my order from last monday", LONG, "please " * 30]
    (root / "corpus.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{'a' if i % 2 else 'b'}\n" for i, t in enumerate(texts)),
                                     encoding="utf-8")
    return texts


def _clean(root: Path, *, bad_model: bool = False, **text_params) -> list[str]:
    """clean's arguments, with params of these `clean.text` bounds (and a model folder without a tokenizer)."""
    finetune = {"text": {"model": str(root / "no-such-model")}} if bad_model else {}
    params = write_params(root / "params.yaml", TSV, clean={"text": text_params}, engine={"partition_rows": 3}, finetune=finetune)
    return ["--dataset", "t", "--params", str(params), "--root", str(root), "--output", str(root / "clean.parquet"),
            "--ledger", str(root / "ledger.parquet"), "--metrics", str(root / "metrics.json")]


def test_clean_drops_by_token_bounds_in_the_ledger_and_the_metrics(tmp_path, counter):
    texts = _corpus(tmp_path)
    assert clean.main(_clean(tmp_path, min_tokens=5, max_tokens=20)) == 0
    counts = counter(texts)
    few, many = int((counts < 5).sum()), int((counts > 20).sum())
    assert few == 2 and many == 2
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["dropped"] == {"too_few_tokens": few, "too_many_tokens": many} and metrics["out"] == len(texts) - few - many
    ledger = pq.read_table(tmp_path / "ledger.parquet").to_pandas().sort_values("detail")
    row = {text: i + 2 for i, text in enumerate(texts)}  # the line in the TSV (after its header)
    expected = sorted([f"corpus.tsv:{row[t]}: {n} tokens < 5" for t, n in zip(texts, counts) if n < 5]
                      + [f"corpus.tsv:{row[t]}: {n} tokens > 20" for t, n in zip(texts, counts) if n > 20])
    assert sorted(ledger["detail"]) == expected
    assert set(counter(read_records(tmp_path / "clean.parquet")["text"])) <= set(range(5, 21))


def test_clean_without_token_bounds_never_loads_a_tokenizer(tmp_path):
    """With both bounds null, a model folder that does not exist is never read, and transformers is
    never imported; with a bound set, that folder fails the stage before it writes anything."""
    _corpus(tmp_path)
    args = _clean(tmp_path, bad_model=True)
    probe = f"import sys; from pipeline.stages import clean; code = clean.main({args!r}); print(code, 'transformers' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.stdout.split() == ["0", "False"], done.stderr
    assert json.loads((tmp_path / "metrics.json").read_text())["out"] == 7


def test_a_token_bound_with_no_tokenizer_fails_naming_the_key(tmp_path, stage_log):
    _corpus(tmp_path)
    assert clean.main(_clean(tmp_path, max_tokens=20, bad_model=True)) == 2
    assert "params.yaml: finetune.text.model: " in stage_log.text and "no-such-model" in stage_log.text
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "clean.parquet").exists()
    (tmp_path / "no-such-model").mkdir()  # a folder, but no tokenizer in it
    assert clean.main(_clean(tmp_path, max_tokens=20, bad_model=True)) == 2
    assert "no tokenizer could be loaded" in stage_log.text


# --- the report -----------------------------------------------------------------------------

def _report(modality: str, tokens: dict | None) -> str:
    """A page whose only stage metrics are rebalance's (with these `tokens`)."""
    card = {"version": "v", "records": {"train": 1, "val": 1, "test": 1}, "classes": {}, "params": {}}
    leakage = {"cross_split_pairs": 0, "method": "exact", "pairs": []}
    metrics = {"rebalance": {"in": 1, "out": 1, "generated": 0, "merged": 0, "dropped": {}, **({"tokens": tokens} if tokens else {})}}
    return render(ReportInputs("t", modality, card, leakage, metrics, evaluate_gates(metrics, card, leakage, GatesParams()),
                              {"train": {"a": 1}}))


def _section_of(page: str, key: str) -> str:
    start = re.search(rf"<section id=['\"]{key}['\"]>", page).start()
    return page[start:page.index("</section>", start)]


def test_report_shows_each_splits_tokens_with_the_share_past_max_length():
    """A table per split: all records first, then the classes most often longer than max_length, at most
    TOKEN_CLASS_ROWS of them; an empty split stays blank; image reports have no such section."""
    rows = {f"class-{i:02d}": {"tokens": [10, 70 + i], "n": [100 - i, i]} for i in range(30)}
    histogram = pd.DataFrame([("train", label, t, n) for label, h in rows.items() for t, n in zip(h["tokens"], h["n"]) if n]
                             + [("test", "class-00", 5, 2)], columns=["split", "label", "tokens", "n"])
    tokens = token_summary(histogram, max_length=64, splits=["train", "val", "test"])
    section = _section_of(_report("text", tokens), "tokens")
    train = section[section.index("<h3>train</h3>"):section.index("<h3>val</h3>")]
    assert "longer than max_length" in train and "at most 64" in section
    assert train.count("<tr>") == 1 + 1 + TOKEN_CLASS_ROWS  # header, all, the capped classes
    assert train.index("class-29") < train.index("class-28") and "class-09" not in train  # most truncated first
    assert f"{30 - TOKEN_CLASS_ROWS} more in the rebalance metrics" in train
    over = tokens["train"]["over_max_length"]
    assert f"{100 * over:.2f}%" in train and f"<td>{tokens['train']['count']}</td>" in train
    val = section[section.index("<h3>val</h3>"):section.index("<h3>test</h3>")]
    assert val.count("<tr>") == 2 and "<td>0</td>" in val  # an empty split: a row of no records
    assert "id='tokens'" not in _report("image", tokens) and 'id="tokens"' not in _report("image", tokens)
    assert "tokens" not in re.findall(r"<section id=['\"](\w+)", _report("text", None))
