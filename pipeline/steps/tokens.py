"""Token counts of the fine-tuning tokenizer: per text, and their distribution per split and class.

A count is what `finetune` makes of a text before it truncates: the tokenizer of
`finetune.text.model`, loaded as the model stages load it (`pipeline.tokenizer`), special tokens
included, nothing truncated. So a text whose count is above `finetune.text.max_length` loses its
tail in training and evaluation.

The distribution is summed from exact histograms, records per (split, class, token count), which
each partition makes on its own; every summary is read off the summed histogram, so it does not
depend on how the records were cut into partitions (no per-partition quantile is ever averaged).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.tokenizer import checked_tokenizer, text_model_folder

BATCH = 1024  # texts per tokenizer call: the fast tokenizer's batch, bounded memory for the ids
QUANTILES = (50, 90, 99)  # percent, nearest rank
HISTOGRAM = pa.schema([("split", pa.string()), ("label", pa.string()), ("tokens", pa.int64()), ("n", pa.int64())])


@dataclass(slots=True, frozen=True)
class TokenCounter:
    """Counts tokens with the tokenizer in `folder`, loaded once per process on first use: only the
    folder travels with a step to a worker."""

    folder: Path

    @classmethod
    def load(cls, model: str | None) -> TokenCounter:
        """The counter of params `finetune.text.model`, its tokenizer loaded now, so that a folder
        without one fails before any work, naming the key."""
        counter = cls(text_model_folder(model).absolute())  # a worker's working folder may differ
        _tokenizer(counter.folder)
        return counter

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Tokens of each text (int64), special tokens included, none truncated."""
        texts = list(texts)
        tokenizer = _tokenizer(self.folder)
        counts = np.zeros(len(texts), dtype=np.int64)
        for start in range(0, len(texts), BATCH):
            batch = texts[start : start + BATCH]
            ids = tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False,
                            return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            counts[start : start + len(batch)] = [len(row) for row in ids]
        return counts


@functools.lru_cache(maxsize=2)
def _tokenizer(folder: Path) -> Any:
    return checked_tokenizer(folder)


def token_histogram(records: pd.DataFrame, *, counter: TokenCounter, split: str) -> pd.DataFrame:
    """Records of one partition (`label`, `text`) per (split, label, token count), as `HISTOGRAM`."""
    frame = pd.DataFrame({"label": records["label"].to_numpy(object), "tokens": counter(records["text"].tolist())})
    counts = frame.groupby(["label", "tokens"], sort=True).size().rename("n").reset_index()
    return pd.DataFrame({"split": np.full(len(counts), split, dtype=object), "label": counts["label"].to_numpy(object),
                         "tokens": counts["tokens"].to_numpy(np.int64), "n": counts["n"].to_numpy(np.int64)})


def token_summary(histogram: pd.DataFrame, *, max_length: int, splits: Sequence[str]) -> dict[str, Any]:
    """The `tokens` metrics from histogram rows (any number per key; they are summed): `max_length`,
    and per split the `summary` of its records, with `per_class` the summary of each class."""
    summed = histogram.groupby(["split", "label", "tokens"], sort=True)["n"].sum().reset_index()
    out: dict[str, Any] = {"max_length": max_length}
    for split in splits:
        rows = summed[summed["split"] == split]
        per_class = {str(label): summary(group["tokens"], group["n"], max_length=max_length)
                     for label, group in rows.groupby("label", sort=True)}
        out[split] = {**summary(rows["tokens"], rows["n"], max_length=max_length), "per_class": per_class}
    return out


def summary(tokens: Sequence[int], counts: Sequence[int], *, max_length: int) -> dict[str, Any]:
    """`count`, `mean`, `p50`, `p90`, `p99`, `max` and `over_max_length` (the fraction of records
    longer than `max_length`) of the records a histogram counts: `counts[i]` records of `tokens[i]`.

    A quantile is the nearest rank: the smallest count that at least that percentage of the records
    do not exceed, always a count some record has. An empty histogram gives count 0 and nulls.
    """
    lengths, n = np.asarray(tokens, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    lengths, n = lengths[order], n[order]
    total = int(n.sum())
    if total == 0:
        return {"count": 0, "mean": None, **{f"p{q}": None for q in QUANTILES}, "max": None, "over_max_length": None}
    cumulative = np.cumsum(n)
    quantiles = {f"p{q}": int(lengths[np.searchsorted(cumulative, -(-q * total // 100))]) for q in QUANTILES}
    over = int(n[lengths > max_length].sum())
    return {"count": total, "mean": round(int((lengths * n).sum()) / total, 6), **quantiles, "max": int(lengths[-1]),
            "over_max_length": round(over / total, 6)}
