"""The dataset card: what a final dataset holds, what made it, and the hash that names its version."""
from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd

from pipeline.params import Params

VERSION_COLUMNS = ["id", "label", "content_hash", "group_id", "parent_id"]
DATA_SECTIONS = ("seed", "clean", "normalise", "dedup", "split", "augment", "rebalance")


def dataset_version(splits: dict[str, pd.DataFrame]) -> str:
    """SHA-256 over each split's records (sorted by id) by id, label, content and lineage.

    It depends on the records, not on Parquet encoding, so it names the data itself.
    """
    digest = hashlib.sha256()
    for name in sorted(splits):
        digest.update(f"[{name}]\n".encode())
        frame = splits[name].sort_values("id")[VERSION_COLUMNS].astype("string").fillna("")
        for row in frame.itertuples(index=False):
            digest.update(("\t".join(row) + "\n").encode("utf-8"))
    return digest.hexdigest()


def make_card(name: str, params: Params, splits: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Counts per split and class, generated records per split, the params used, and the version hash."""
    counts = {s: {str(k): int(v) for k, v in f["label"].value_counts().sort_index().items()} for s, f in splits.items()}
    dataset = params.datasets[name]
    used = {key: _dump(getattr(params, key)) for key in DATA_SECTIONS}
    used["clean"], used["normalise"] = _modality(used["clean"], dataset.modality), _modality(used["normalise"], dataset.modality)
    used["augment"] = _modality(used["augment"], dataset.modality)
    return {
        "dataset": name,
        "modality": dataset.modality,
        "version": dataset_version(splits),
        "records": {s: int(len(f)) for s, f in splits.items()},
        "generated": {s: int(f["parent_id"].notna().sum()) for s, f in splits.items()},
        "classes": counts,
        "params": {"dataset": dataset.model_dump(mode="json"), **used},
    }


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _modality(section: dict[str, Any], modality: str) -> dict[str, Any]:
    return section[modality]
