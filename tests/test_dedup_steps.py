"""Unit tests for pipeline.steps.dedup: clusters, survivors and label conflicts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import text_records
from pipeline.ledger import Fates
from pipeline.params import DedupParams
from pipeline.steps.dedup import exact_duplicates


def merges(result) -> list[tuple]:
    """(id, survivor, reason, detail) of each merged record."""
    rows = result.fates.of("merged")
    return list(zip(rows["id"], rows["into"], rows["reason"], rows["detail"]))


def ids_of(result, fate: str) -> list[str]:
    return result.fates.of(fate)["id"].tolist()


def _accounted(records, result) -> None:
    """Every input record is kept, merged or dropped, exactly once."""
    kept, merged, dropped = set(result.kept["id"]), {m[0] for m in merges(result)}, set(ids_of(result, "dropped"))
    assert len(result.kept) + len(merges(result)) + len(ids_of(result, "dropped")) == len(records)
    assert kept | merged | dropped == set(records["id"])
    assert not (kept & merged) and not (kept & dropped) and not (merged & dropped)


def _ids_by_text(records) -> dict[str, list[str]]:
    return records.groupby("text")["id"].apply(sorted).to_dict()


def test_exact_duplicates_merge_into_smallest_id_under_first_id():
    """A cluster keeps its smallest id and every other member names it as survivor."""
    records = text_records([("a", "same text"), ("a", "other"), ("a", "same text")])
    result = exact_duplicates(records.iloc[::-1], DedupParams(survivor="first_id"))
    dup_ids = _ids_by_text(records)["same text"]
    assert result.clusters == 1 and result.conflicts == 0
    assert set(result.kept["id"]) == {min(dup_ids), *_ids_by_text(records)["other"]}
    assert merges(result) == [(max(dup_ids), min(dup_ids), "exact_duplicate", None)]
    _accounted(records, result)


def test_longest_policy_keeps_the_longest_content():
    """Under `longest`, the member with the most content survives, whatever its id."""
    records = text_records([("a", "x"), ("a", "x longer"), ("a", "x mid")])
    records["content_hash"] = "h"  # one cluster whose members differ in length (e.g. before folding)
    result = exact_duplicates(records, DedupParams(survivor="longest"))
    longest = records.loc[records["text"] == "x longer", "id"].item()
    assert list(result.kept["id"]) == [longest]
    assert {m[1] for m in merges(result)} == {longest}
    _accounted(records, result)


def test_longest_policy_on_images_compares_encoded_size():
    """Image records (no text) pick the largest encoding of the same pixels."""
    records = text_records([("a", "p"), ("a", "p"), ("a", "p")])
    records["text"] = None
    records["image"] = [b"\x89PNG" + b"0" * 5, b"\x89PNG" + b"0" * 50, b"\x89PNG" + b"0" * 20]
    result = exact_duplicates(records, DedupParams(survivor="longest"))
    assert list(result.kept["id"]) == [records.loc[1, "id"]]


def test_chain_of_many_duplicates_merges_into_one_survivor():
    """Five copies of one text leave one survivor; the four others all point at it (no chains)."""
    records = text_records([("a", "dup")] * 5 + [("b", "unique")])
    result = exact_duplicates(records, DedupParams())
    survivor = min(records.loc[records["text"] == "dup", "id"])
    assert result.clusters == 1
    assert sorted(result.kept["id"]) == sorted([survivor, records.loc[5, "id"]])
    assert len(merges(result)) == 4
    assert {m[1] for m in merges(result)} == {survivor}
    assert all(m[2] == "exact_duplicate" for m in merges(result))
    _accounted(records, result)


def test_majority_conflict_keeps_majority_label_and_merges_minority():
    """A 3-vs-1 label conflict keeps one record of the majority label; the minority is merged with its reason."""
    records = text_records([("a", "t"), ("b", "t"), ("a", "t"), ("a", "t"), ("b", "free")])
    result = exact_duplicates(records, DedupParams(conflicts="majority"))
    cluster = records[records["text"] == "t"]
    survivor = min(cluster.loc[cluster["label"] == "a", "id"])
    minority = cluster.loc[cluster["label"] == "b", "id"].item()
    assert result.clusters == 1 and result.conflicts == 1
    kept_survivor = result.kept[result.kept["id"] == survivor]
    assert list(kept_survivor["label"]) == ["a"]
    assert (minority, survivor, "label_conflict_minority", None) in merges(result)
    assert sum(m[2] == "exact_duplicate" for m in merges(result)) == 2
    assert ids_of(result, "dropped") == [] and ids_of(result, "flagged") == []
    _accounted(records, result)


def test_drop_conflict_drops_whole_cluster():
    """Under `drop`, every member of a conflicting cluster is dropped and nothing of it is kept."""
    records = text_records([("a", "t"), ("b", "t"), ("a", "t"), ("a", "ok"), ("a", "ok")])
    result = exact_duplicates(records, DedupParams(conflicts="drop"))
    cluster = set(records.loc[records["text"] == "t", "id"])
    assert set(ids_of(result, "dropped")) == cluster
    assert not cluster & set(result.kept["id"])
    assert result.clusters == 2 and result.conflicts == 1
    assert list(result.kept["text"]) == ["ok"]
    _accounted(records, result)


def test_keep_conflict_keeps_one_flagged_survivor_per_label():
    """Under `keep`, each label of a conflicting cluster keeps one record, and those survivors are flagged."""
    records = text_records([("a", "t"), ("b", "t"), ("a", "t"), ("b", "t"), ("c", "t")])
    result = exact_duplicates(records, DedupParams(conflicts="keep"))
    assert sorted(result.kept["label"]) == ["a", "b", "c"]
    assert sorted(ids_of(result, "flagged")) == sorted(result.kept["id"])
    for label in ("a", "b"):
        ids = sorted(records.loc[records["label"] == label, "id"])
        assert (ids[1], ids[0], "exact_duplicate", None) in merges(result)
    assert result.conflicts == 1 and result.clusters == 1
    _accounted(records, result)


@pytest.mark.parametrize("conflicts", ["majority", "drop", "keep"])
def test_counts_and_balance_on_a_mixed_set(conflicts):
    """Clusters and conflicts are counted per content, and kept + merged + dropped equals the input."""
    rows = [("a", "one"), ("a", "one"), ("a", "two"), ("b", "two"), ("a", "three"), ("b", "four"), ("b", "four"), ("b", "four")]
    records = text_records(rows).sample(frac=1.0, random_state=3)
    result = exact_duplicates(records, DedupParams(conflicts=conflicts))
    assert result.clusters == 3
    assert result.conflicts == 1
    _accounted(records, result)


@pytest.mark.parametrize("survivor", ["first_id", "longest", "most_common_label"])
@pytest.mark.parametrize("conflicts", ["majority", "drop", "keep"])
def test_many_clusters_resolve_by_policy(survivor, conflicts):
    """Over many clusters at once, every merge points at a kept record of the same content, the
    survivor follows the policy within its label, and conflicts are handled per cluster."""
    gen = np.random.default_rng(7)
    texts = [f"text {int(k)}" + "!" * int(n) for k, n in zip(gen.integers(0, 60, 400), gen.integers(0, 3, 400))]
    rows = [(str(label), text) for label, text in zip(gen.choice(["a", "b", "c"], 400, p=[0.8, 0.15, 0.05]), texts)]
    records = text_records(rows)
    result = exact_duplicates(records, DedupParams(survivor=survivor, conflicts=conflicts))
    _accounted(records, result)
    by_id = records.set_index("id")
    kept = set(result.kept["id"])
    labels_per_text = records.groupby("text")["label"].nunique()
    assert result.clusters == int((records["text"].value_counts() > 1).sum())
    assert result.conflicts == int((labels_per_text > 1).sum())
    for record_id, into, reason, _ in merges(result):
        assert into in kept and by_id.at[into, "text"] == by_id.at[record_id, "text"]
        if reason == "exact_duplicate":
            same = records[(records["text"] == by_id.at[into, "text"]) & (records["label"] == by_id.at[into, "label"])]
            best = same.sort_values("id")["id"].iloc[0]
            if survivor == "longest":  # exact duplicates share their text, so the first id wins the tie
                best = same.assign(n=same["text"].str.len()).sort_values(["n", "id"], ascending=[False, True])["id"].iloc[0]
            assert by_id.at[record_id, "label"] == by_id.at[into, "label"] and into == best
        else:
            assert reason == "label_conflict_minority" and conflicts == "majority"
    conflicted = set(labels_per_text[labels_per_text > 1].index)
    if conflicts == "drop":
        assert set(ids_of(result, "dropped")) == set(records.loc[records["text"].isin(conflicted), "id"])
    if conflicts == "keep":
        assert set(ids_of(result, "flagged")) == {i for i in kept if by_id.at[i, "text"] in conflicted}
        kept_labels = result.kept.groupby("text")["label"].apply(lambda labels: sorted(labels))
        assert kept_labels.to_dict() == records.groupby("text")["label"].apply(lambda labels: sorted(set(labels))).to_dict()
    if conflicts == "majority":
        assert result.kept["text"].is_unique


def test_no_duplicates_keeps_everything():
    """A record set without duplicates passes through unchanged (sorted by id)."""
    records = text_records([("a", "one"), ("b", "two"), ("a", "three")])
    result = exact_duplicates(records, DedupParams())
    assert sorted(result.kept["id"]) == sorted(records["id"])
    assert merges(result) == [] and ids_of(result, "dropped") == [] and result.clusters == 0


# --- near duplicates and groups -------------------------------------------------------------

BASE = "the parcel with my new winter boots never arrived although tracking says it was delivered"


def test_near_duplicate_texts_merge_with_their_similarity_in_the_detail():
    from pipeline.steps.dedup import near_duplicates

    records = text_records([("a", BASE), ("a", BASE + " yesterday"), ("a", "please refund the double charge on my card")])
    result = near_duplicates(records, "text", DedupParams())
    assert len(result.kept) == 2 and result.clusters == 1
    (merged_id, survivor, reason, detail), = merges(result)
    assert reason == "near_duplicate" and survivor == min(records["id"][:2])
    assert detail.startswith("jaccard 0.") and detail.endswith(survivor)


def test_looser_groups_share_the_smallest_id_whatever_the_order():
    from pipeline.steps.dedup import group_ids

    rows = [("a", BASE), ("a", BASE.replace("winter boots", "summer sandals")), ("b", "my invoice shows a wrong address")]
    records = text_records(rows)
    groups = group_ids(records, "text", DedupParams())
    assert groups.iloc[0] == groups.iloc[1] == min(records["id"][:2]) and groups.iloc[2] == records["id"].iloc[2]
    shuffled = records.iloc[[2, 0, 1]]
    assert group_ids(shuffled, "text", DedupParams()).sort_index().equals(groups.sort_index())


def test_content_and_label_key_keeps_the_same_text_under_two_labels():
    records = text_records([("a", "same text"), ("b", "same text")])
    assert len(exact_duplicates(records, DedupParams(key="content_and_label")).kept) == 2
    assert len(exact_duplicates(records, DedupParams()).kept) == 1


def test_most_common_label_survivor_comes_from_the_largest_label():
    records = text_records([("b", "t"), ("a", "t"), ("a", "t")])
    survivor = exact_duplicates(records, DedupParams(survivor="most_common_label")).kept
    assert survivor["label"].tolist() == ["a"]


def test_near_duplicate_images_merge_and_different_ones_stay():
    import io

    import numpy as np
    from PIL import Image

    from pipeline.records import conform, make_id
    from pipeline.steps.dedup import near_duplicates

    def encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt, **options)
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    scene = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # blocky 64x64 picture
    other = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    blobs = [encoded(scene, "PNG"), encoded(scene, "JPEG", quality=60), encoded(other, "PNG")]
    records = conform(pd.DataFrame({
        "id": [make_id("img", i) for i in range(3)], "label": "x", "image": blobs, "content_hash": ["h0", "h1", "h2"],
        "source": "mem", "group_id": [make_id("img", i) for i in range(3)],
    }))
    result = near_duplicates(records, "image", DedupParams())
    assert len(result.kept) == 2 and merges(result)[0][2] == "near_duplicate" and merges(result)[0][3].startswith("hamming ")


def test_exact_merges_follow_their_survivor_into_a_near_duplicate():
    """An exact copy of X, where X later merges into its near duplicate Y, names Y (via X) in the ledger."""
    from pipeline.steps.dedup import follow_merges

    exact = Fates.merged(["x2", "z2"], ["x", "z"], "exact_duplicate") + Fates.dropped(["q"], "label_conflict")
    near = Fates.merged(["x"], ["y"], "near_duplicate", ["jaccard 0.910 with y"])
    followed = follow_merges(exact, near).frame
    assert list(zip(followed["id"], followed["fate"], followed["into"], followed["detail"])) == [
        ("x2", "merged", "y", "via x"),
        ("z2", "merged", "z", None),
        ("q", "dropped", None, None),
    ]
