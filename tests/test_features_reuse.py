"""The features stage and rebalance's cleaners reuse the embed stage's vectors (real offline MiniLM).

A tiny corpus goes through embed; its final splits hold the originals (one relabelled), oversampled
copies (of originals and of an augmented variant) and augmented variants. Originals take the embed
stage's vectors byte for byte, copies their parent's, and only the variants go through the model,
each once, in id order.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import text_records, write_params
from test_finetune_stages import IMAGE, QUICK, image_final

from pipeline.io import read_records, write_records
from pipeline.model import embedding
from pipeline.model.embedding import feature_tables, source_counts, vector_sources
from pipeline.model.models import TextClassifier, feature_extractor
from pipeline.params import load_params
from pipeline.records import make_id, op_json, text_hash
from pipeline.stages import embed, features, rebalance
from pipeline.steps import rebalance as rebalance_steps

TEXT = {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}
SECTIONS = {"finetune": {"text": {"max_length": 24}}, "rebalance": {"strategy": "edited_nearest_neighbours"}}
BILLING = ["my invoice shows a charge of {} pounds", "refund the {} pounds you took twice", "the card was billed {} times"]
SHIPPING = ["the parcel is {} days late", "courier left box {} at the wrong door", "tracking number {} shows nothing"]


def originals() -> pd.DataFrame:
    """24 records after dedup: 12 per class."""
    rows = [(label, templates[i % 3].format(i)) for i in range(12) for label, templates in (("billing", BILLING), ("shipping", SHIPPING))]
    return text_records(rows)


def generated(parents: pd.DataFrame, texts: list[str] | None, op: str) -> pd.DataFrame:
    """Records generated from `parents`: variants with `texts`, or (None) copies of the same content."""
    out = parents.copy()
    root = out["parent_id"].where(out["parent_id"].notna(), out["id"])
    out["id"] = [make_id(i, op, n) for n, i in enumerate(out["id"])]
    if texts is not None:
        out["text"], out["content_hash"] = texts, [text_hash(t) for t in texts]
    out["parent_id"], out["op"] = root, op_json({"op": op})
    return out.reset_index(drop=True)


def spy(monkeypatch) -> list[list[str]]:
    """The ids of each frame the model embeds from now on."""
    seen, real = [], TextClassifier.features

    def features_of(self, frame, *args, **kwargs):
        seen.append(list(frame["id"]))
        return real(self, frame, *args, **kwargs)

    monkeypatch.setattr(TextClassifier, "features", features_of)
    return seen


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Embeddings of the originals, and final splits: train with copies and variants, val, test."""
    root = tmp_path_factory.mktemp("reuse")
    params = write_params(root / "params.yaml", TEXT, **SECTIONS)
    dedup = originals()
    write_records(dedup, root / "dedup.parquet")
    assert embed.main(["--dataset", "t", "--params", str(params), "--input", str(root / "dedup.parquet"),
                       "--output", str(root / "embeddings.parquet"), "--metrics", str(root / "embed.json")]) == 0
    train = dedup.iloc[:16].copy()
    train.loc[0, "label"] = "shipping"  # relabelled after embed: the vector is about the content
    variants = generated(train.iloc[[3, 4, 9]], ["a brand new sentence about invoices", "another parcel story here",
                                                  "a third text that nobody embedded"], "augment")
    copies = pd.concat([generated(train.iloc[[1, 2]], None, "oversample"), generated(train.iloc[[2]], None, "oversample-again"),
                        generated(variants.iloc[[0]], None, "oversample")], ignore_index=True)
    final = root / "final"
    write_records(pd.concat([train, variants, copies], ignore_index=True), final / "train.parquet")
    write_records(dedup.iloc[16:20], final / "val.parquet")
    write_records(dedup.iloc[20:], final / "test.parquet")
    write_records(pd.concat([train, variants], ignore_index=True), root / "augment" / "train.parquet")
    write_records(dedup.iloc[16:20], root / "split" / "val.parquet")
    write_records(dedup.iloc[20:], root / "split" / "test.parquet")
    return {"root": root, "params": params, "train": train, "variants": variants, "copies": copies, "final": final}


def run_features(corpus: dict, out: Path, *, embeddings: bool = True) -> tuple[list[list[str]], dict]:
    """The features stage on the corpus' final splits; the ids it embedded per chunk, and its metrics."""
    argv = ["--dataset", "t", "--params", str(corpus["params"]), "--data", str(corpus["final"]), "--output", str(out / "features"),
            "--metrics", str(out / "metrics.json")]
    with pytest.MonkeyPatch.context() as monkeypatch:
        embedded = spy(monkeypatch)
        assert features.main([*argv, *(["--embeddings", str(corpus["root"] / "embeddings.parquet")] if embeddings else [])]) == 0
    return embedded, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def reused(corpus, tmp_path_factory) -> tuple[Path, list[list[str]], dict]:
    out = tmp_path_factory.mktemp("features")
    embedded, metrics = run_features(corpus, out)
    return out / "features", embedded, metrics


def first_with_new_content(corpus: dict) -> list[str]:
    """The record of each new content (a variant's) that is embedded: the first by id (here a copy, once)."""
    generated_records = pd.concat([corpus["variants"], corpus["copies"]])
    new = generated_records[generated_records["content_hash"].isin(corpus["variants"]["content_hash"])]
    return sorted(new.groupby("content_hash")["id"].min())


def vectors_by_id(path: Path) -> dict[str, bytes]:
    """Each row's vector, as its float32 bytes."""
    table = pq.read_table(path)
    matrix = np.stack(table.column("features").to_numpy(zero_copy_only=False)).astype(np.float32)
    return {key: row.tobytes() for key, row in zip(table.column("id").to_pylist(), matrix, strict=True)}


def output_vectors(folder: Path) -> dict[str, bytes]:
    return {k: v for split in ("train", "val", "test") for k, v in vectors_by_id(folder / f"{split}.parquet").items()}


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


# --- the features stage -----------------------------------------------------------------------

def test_originals_take_the_embed_stages_vectors_byte_for_byte(corpus, reused):
    folder, _, _ = reused
    stored, got = vectors_by_id(corpus["root"] / "embeddings.parquet"), output_vectors(folder)
    assert len(stored) == 24
    assert {key: got[key] for key in stored} == stored  # every original, in train, val or test


def test_copies_take_their_parents_vector_and_only_variants_are_embedded_once(corpus, reused):
    folder, embedded, metrics = reused
    got, variants, copies = output_vectors(folder), corpus["variants"], corpus["copies"]
    parent = pd.concat([corpus["train"], variants]).set_index("content_hash")["id"]  # of each content
    assert all(got[i] == got[parent[h]] for i, h in zip(copies["id"], copies["content_hash"], strict=True))
    assert embedded == [first_with_new_content(corpus)]  # one chunk, in id order: no original, each new content once
    assert metrics["vectors"] == {"reused": 24, "copied": 4, "embedded": 3}
    assert metrics["in"] == metrics["out"] == 31 and metrics["dimensions"] == 384


def test_variants_get_the_vectors_the_model_gives_them_in_one_chunk(corpus, reused, tmp_path):
    """The fresh chunk is the variants in id order, as feature_tables reads a record set of them alone."""
    folder, _, _ = reused
    write_records(corpus["variants"], tmp_path / "variants.parquet")
    params = load_params(corpus["params"])
    model = feature_extractor(params.finetune, "text", ["billing", "shipping"], seed=0)
    alone = pd.concat([t.to_pandas() for t in feature_tables(model, tmp_path / "variants.parquet", "text")])
    got = output_vectors(folder)
    assert {i: np.asarray(v, dtype=np.float32).tobytes() for i, v in zip(alone["id"], alone["features"])} == \
        {i: got[i] for i in alone["id"]}


def test_the_files_keep_their_format_and_the_final_labels(corpus, reused):
    folder, _, _ = reused
    train = pq.read_table(folder / "train.parquet")
    assert train.column_names == ["id", "label", "features"] and train.schema.field("features").type.list_size == 384
    ids = train.column("id").to_pylist()
    assert ids == sorted(ids) and len(ids) == 23
    final = read_records(corpus["final"] / "train.parquet").set_index("id")["label"]
    assert train.column("label").to_pylist() == final.loc[ids].tolist()
    assert dict(zip(ids, train.column("label").to_pylist()))[corpus["train"].loc[0, "id"]] == "shipping"


def test_a_rerun_writes_the_same_bytes(corpus, reused, tmp_path):
    folder, _, first = reused
    _, again = run_features(corpus, tmp_path)
    assert file_hashes(tmp_path / "features") == file_hashes(folder) and again == first


def test_new_content_is_embedded_in_chunks_of_the_data_alone(corpus, reused, tmp_path, monkeypatch):
    """With two-record chunks the variants go through in sorted pairs, one row group per chunk of a split."""
    monkeypatch.setattr(embedding, "CHUNK_ROWS", 2)
    monkeypatch.setattr(features, "CHUNK_ROWS", 2)
    embedded, _ = run_features(corpus, tmp_path)
    fresh = first_with_new_content(corpus)
    assert embedded == [fresh[:2], fresh[2:]]
    assert pq.ParquetFile(tmp_path / "features" / "val.parquet").num_row_groups == 2
    got, whole = output_vectors(tmp_path / "features"), output_vectors(reused[0])
    assert {k: got[k] for k in vectors_by_id(corpus["root"] / "embeddings.parquet")} == \
        {k: whole[k] for k in vectors_by_id(corpus["root"] / "embeddings.parquet")}


def test_without_embeddings_each_distinct_content_is_embedded_once(corpus, reused, tmp_path):
    embedded, metrics = run_features(corpus, tmp_path, embeddings=False)
    assert metrics["vectors"] == {"reused": 0, "copied": 4, "embedded": 27}
    final = pd.concat([read_records(corpus["final"] / f"{s}.parquet") for s in ("train", "val", "test")]).set_index("id")
    hashes = final.loc[[i for chunk in embedded for i in chunk], "content_hash"]
    assert hashes.is_unique and set(hashes) == set(final["content_hash"])  # every content once
    got, whole = output_vectors(tmp_path / "features"), output_vectors(reused[0])
    assert got.keys() == whole.keys()
    for key in got:
        assert np.allclose(np.frombuffer(got[key], np.float32), np.frombuffer(whole[key], np.float32), atol=1e-5)


def test_a_missing_embeddings_file_is_named(corpus, tmp_path, stage_log):
    code = features.main(["--dataset", "t", "--params", str(corpus["params"]), "--data", str(corpus["final"]),
                          "--output", str(tmp_path / "features"), "--metrics", str(tmp_path / "m.json"),
                          "--embeddings", str(tmp_path / "nowhere.parquet")])
    assert code == 1 and f"no embeddings at {tmp_path / 'nowhere.parquet'}: run the embed stage first" in stage_log.text
    assert "Traceback" not in stage_log.text


# --- matching, without the model ----------------------------------------------------------------

def test_sources_follow_the_id_then_the_content_hash_whatever_the_row_order():
    """a and c were embedded; b copies c (same content); d and e share new content (d, the first,
    is embedded); 0 copies a although its id sorts first."""
    keys = pd.DataFrame({"id": ["0", "a", "b", "c", "d", "e", "f"],
                         "content_hash": ["ha", "ha", "hc", "hc", "hd", "hd", "hf"]})
    embedded = pd.Index(["a", "c", "z"])
    sources = vector_sources(keys, embedded)
    assert sources.to_dict() == {"0": "a", "a": "a", "b": "c", "c": "c", "d": "d", "e": "d", "f": "f"}
    assert source_counts(sources, embedded) == {"reused": 2, "copied": 3, "embedded": 2}


# --- rebalance's cleaners ---------------------------------------------------------------------

def run_rebalance(corpus: dict, out: Path, partition_rows: int) -> tuple[list[list[str]], dict]:
    root = corpus["root"]
    out.mkdir(parents=True)
    params = write_params(out / "params.yaml", TEXT, **SECTIONS, engine={"partition_rows": partition_rows})
    argv = ["--dataset", "t", "--params", str(params), "--train", str(root / "augment" / "train.parquet"), "--split", str(root / "split"),
            "--output", str(out / "final"), "--embeddings", str(root / "embeddings.parquet"), "--metrics", str(out / "metrics.json"),
            "--ledger", str(out / "ledger.parquet")]
    with pytest.MonkeyPatch.context() as monkeypatch:
        embedded = spy(monkeypatch)
        assert rebalance.main(argv) == 0
    return embedded, json.loads((out / "metrics.json").read_text())


def test_cleaners_reuse_the_embed_stages_vectors_and_embed_only_the_variants(corpus, tmp_path):
    embedded, metrics = run_rebalance(corpus, tmp_path / "whole", 100_000)
    variants = corpus["variants"]
    assert embedded == [sorted(variants["id"])]
    assert metrics["vectors"] == {"reused": 16, "copied": 0, "embedded": 3}
    train = pd.concat([corpus["train"], variants]).sort_values("id", ignore_index=True)
    stored = vectors_by_id(corpus["root"] / "embeddings.parquet")
    params = load_params(corpus["params"])
    model = feature_extractor(params.finetune, "text", ["billing", "shipping"], seed=0)
    fresh = dict(zip(sorted(variants["id"]), model.features(variants.sort_values("id")).numpy()))
    matrix = np.stack([np.frombuffer(stored[i], np.float32) if i in stored else fresh[i] for i in train["id"]])
    expected = rebalance_steps.rebalance(train, params.rebalance, params.seed, matrix).dropped
    ledger = pd.read_parquet(tmp_path / "whole" / "ledger.parquet")
    assert sorted(ledger.loc[ledger["fate"] == "dropped", "id"]) == sorted(expected)
    _, pieces = run_rebalance(corpus, tmp_path / "pieces", 5)
    assert pieces == metrics


def test_images_reuse_the_embed_stages_vectors_too(tmp_path):
    """EfficientNet-Lite0 at 32 px: originals byte for byte, a copy its parent's, nothing embedded."""
    final = image_final(tmp_path)
    params = write_params(tmp_path / "params.yaml", IMAGE, finetune=QUICK)
    splits = {name: read_records(final / f"{name}.parquet") for name in ("train", "val", "test")}
    write_records(pd.concat(splits.values(), ignore_index=True), tmp_path / "dedup.parquet")
    common = ["--dataset", "im", "--params", str(params)]
    assert embed.main([*common, "--input", str(tmp_path / "dedup.parquet"), "--output", str(tmp_path / "embeddings.parquet"),
                       "--metrics", str(tmp_path / "embed.json")]) == 0
    copies = generated(splits["train"].iloc[[0]], None, "oversample")
    write_records(pd.concat([splits["train"], copies], ignore_index=True), final / "train.parquet")
    assert features.main([*common, "--data", str(final), "--output", str(tmp_path / "features"), "--metrics", str(tmp_path / "m.json"),
                          "--embeddings", str(tmp_path / "embeddings.parquet")]) == 0
    stored, got = vectors_by_id(tmp_path / "embeddings.parquet"), output_vectors(tmp_path / "features")
    assert {key: got[key] for key in stored} == stored and got[copies.loc[0, "id"]] == stored[splits["train"].loc[0, "id"]]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["vectors"] == {"reused": len(stored), "copied": 1, "embedded": 0} and metrics["dimensions"] == 1280
