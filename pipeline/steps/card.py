"""The dataset card: what a final dataset holds, what made it, and the hash that names its version."""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from pipeline.params import Params

VERSION_COLUMNS = ["id", "label", "content_hash", "group_id", "parent_id"]
DATA_SECTIONS = ("seed", "clean", "normalise", "dedup", "decontaminate", "label_issues", "split", "augment", "rebalance")


def describe(splits: Mapping[str, Iterable[pd.DataFrame]]) -> tuple[dict[str, dict[str, Any]], str]:
    """One pass over each split's records, given in id order in any number of chunks (a record set
    read shard by shard is in id order): the card's summary of each split, and the version hash,
    SHA-256 over each split's records by id, label, content and lineage.

    The hash depends on the records, not on Parquet encoding, so it names the data itself.
    """
    digest, summaries = hashlib.sha256(), {}
    for name in sorted(splits):
        digest.update(f"[{name}]\n".encode())
        classes, generated = Counter(), 0
        for chunk in splits[name]:
            frame = chunk[VERSION_COLUMNS].astype("string").fillna("")
            for row in frame.itertuples(index=False):
                digest.update(("\t".join(row) + "\n").encode("utf-8"))
            classes.update(chunk["label"].value_counts().to_dict())
            generated += int(chunk["parent_id"].notna().sum())
        summaries[name] = split_summary(classes, generated)
    return summaries, digest.hexdigest()


def dataset_version(splits: Mapping[str, pd.DataFrame]) -> str:
    """The version hash of splits held whole, in any row order."""
    return describe({name: [frame.sort_values("id")] for name, frame in splits.items()})[1]


def split_summary(class_counts: Mapping[str, int], generated: int) -> dict[str, Any]:
    """What the card says of one split: its records, how many were generated, and its class counts."""
    classes = {str(k): int(v) for k, v in sorted(class_counts.items())}
    return {"records": sum(classes.values()), "generated": int(generated), "classes": classes}


def summaries_of(splits: Mapping[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """The summary of each split held whole."""
    return describe({name: [frame] for name, frame in splits.items()})[0]


def make_card(name: str, params: Params, summaries: Mapping[str, Mapping[str, Any]], version: str) -> dict[str, Any]:
    """Counts per split and class, generated records per split, the params used, and the version hash."""
    dataset = params.datasets[name]
    used = {key: _dump(getattr(params, key)) for key in DATA_SECTIONS}
    used["clean"], used["normalise"] = _modality(used["clean"], dataset.modality), _modality(used["normalise"], dataset.modality)
    used["augment"] = _modality(used["augment"], dataset.modality)
    return {
        "dataset": name,
        "modality": dataset.modality,
        "version": version,
        "records": {s: summary["records"] for s, summary in summaries.items()},
        "generated": {s: summary["generated"] for s, summary in summaries.items()},
        "classes": {s: dict(summary["classes"]) for s, summary in summaries.items()},
        "params": {"dataset": dataset.model_dump(mode="json"), **used},
    }


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _modality(section: dict[str, Any], modality: str) -> dict[str, Any]:
    return section[modality]
