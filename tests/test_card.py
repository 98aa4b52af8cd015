"""Unit tests for pipeline.steps.card: the version hash and the dataset card."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import make_params, text_records
from pipeline.steps.card import dataset_version, describe, make_card, summaries_of


def _splits() -> dict:
    train = text_records([("a", "one"), ("b", "two"), ("a", "three"), ("b", "four")])
    train.loc[3, "parent_id"] = train.loc[1, "id"]  # an augmented record
    val = text_records([("a", "five"), ("b", "six")]).assign(id=lambda f: "v" + f["id"])
    test = text_records([("a", "seven"), ("b", "eight"), ("b", "nine")]).assign(id=lambda f: "t" + f["id"])
    return {"train": train, "val": val, "test": test}


def test_version_is_stable_under_row_and_column_order():
    """Reordering rows (or columns, or the split dict) keeps the version."""
    splits = _splits()
    reordered = {name: frame.iloc[::-1][frame.columns[::-1]] for name, frame in reversed(splits.items())}
    assert dataset_version(reordered) == dataset_version(splits)


@pytest.mark.parametrize(
    ("column", "value"),
    [("label", "c"), ("content_hash", "0" * 64), ("group_id", "other-group"), ("parent_id", "someone")],
)
def test_version_changes_with_record_content(column, value):
    """A changed label, content hash, group or lineage gives another version."""
    splits = _splits()
    before = dataset_version(splits)
    splits["train"].loc[0, column] = value
    assert dataset_version(splits) != before


def test_version_changes_when_a_record_moves_split():
    """Moving a record from val to test gives another version."""
    splits = _splits()
    before = dataset_version(splits)
    moved = {"train": splits["train"], "val": splits["val"].iloc[1:], "test": pd.concat([splits["test"], splits["val"].iloc[:1]])}
    assert dataset_version(moved) != before


def test_version_ignores_columns_outside_identity():
    """Text, op and source row are not part of the version (content_hash stands for content)."""
    splits = _splits()
    before = dataset_version(splits)
    splits["train"].loc[0, "op"] = '{"op":"x"}'
    splits["train"].loc[0, "source_row"] = 999
    assert dataset_version(splits) == before


def test_make_card_counts_and_params():
    """The card counts records and classes per split, generated per split, and holds the text params."""
    params = make_params(seed=7, split={"train": 0.6, "val": 0.2, "test": 0.2})
    splits = _splits()
    card = make_card("t", params, summaries_of(splits), dataset_version(splits))
    assert card["dataset"] == "t" and card["modality"] == "text"
    assert card["version"] == dataset_version(splits)
    assert card["records"] == {"train": 4, "val": 2, "test": 3}
    assert card["generated"] == {"train": 1, "val": 0, "test": 0}
    assert card["classes"] == {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 1}, "test": {"a": 1, "b": 2}}
    used = card["params"]
    assert used["seed"] == 7
    assert used["split"]["train"] == 0.6
    assert used["dataset"]["source"] == "corpus.tsv"
    assert used["clean"] == params.clean.text.model_dump(mode="json")
    assert used["normalise"] == params.normalise.text.model_dump(mode="json")
    assert used["augment"] == params.augment.text.model_dump(mode="json")
    assert set(used) >= {"dedup", "rebalance"}
    assert "image" not in json.dumps({k: used[k] for k in ("clean", "normalise", "augment")})
    json.dumps(card)  # the card is plain JSON


def test_make_card_for_images_uses_image_sections():
    """An image dataset's card holds the image clean/normalise/augment sections."""
    params = make_params({"im": {"modality": "image", "source": "imgs", "format": "image_folder"}})
    card = make_card("im", params, summaries_of(_splits()), dataset_version(_splits()))
    assert card["modality"] == "image"
    assert card["params"]["normalise"] == params.normalise.image.model_dump(mode="json")
    assert "transform" in card["params"]["augment"]


def test_the_stage_that_writes_the_card_depends_on_every_section_it_records():
    """Otherwise a change to, say, a quality threshold leaves a card naming the old value."""
    import yaml

    from conftest import ROOT
    from pipeline.steps.card import DATA_SECTIONS

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["rebalance"]["do"]
    assert set(DATA_SECTIONS) | {"datasets.${key}"} <= set(stage["params"])


def test_the_version_of_a_set_read_in_chunks_in_id_order_is_that_of_the_set_whole():
    """The rebalance stage describes the final record sets shard by shard: any chunking gives the same
    summaries and version."""
    splits = _splits()
    ordered = {name: frame.sort_values("id") for name, frame in splits.items()}
    chunked = {name: [frame.iloc[i:i + 1] for i in range(len(frame))] for name, frame in ordered.items()}
    assert describe(chunked) == (summaries_of(splits), dataset_version(splits))
