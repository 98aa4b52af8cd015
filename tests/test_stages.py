"""Stage CLIs run in process via `main([...])`: clean -> normalise -> dedup -> split -> augment -> rebalance.

Each modality's chain runs on a tiny corpus in a temporary folder: a TSV with duplicates, a ragged
row and an unknown label, and an image folder with a duplicate picture, an empty file and a
non-image file.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import write_params
from pipeline.io import read_records
from pipeline.stages import augment, clean, dedup, normalise, rebalance, split

STAGES = ("clean", "normalise", "dedup", "split", "augment", "rebalance")
DATASETS = {
    "t": {"modality": "text", "source": "corpus.tsv", "format": "tsv", "labels": ["billing", "shipping"],
          "label_map": {"bill": "billing"}},
    "im": {"modality": "image", "source": "images", "format": "image_folder", "labels": ["circle", "square"]},
}
SECTIONS = {"normalise": {"image": {"size": 24}}, "engine": {"workers": 1, "chunk_size": 16}}


# --- inputs ---------------------------------------------------------------------------------

WORDS = ("invoice parcel refund courier depot charge account delivery monday card address label box "
         "order tracking payment receipt week late broken lamp door price twice wrong").split()


def _sentence(seed: int) -> str:
    """Eight words drawn for `seed`: different sentences share few character 5-grams."""
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.choice(len(WORDS), 8, replace=False))


def write_corpus(root: Path) -> None:
    """A 60-row TSV: 2 classes, exact duplicates (one only after whitespace folding), a conflict, bad rows."""
    billing, shipping = [_sentence(i) for i in range(30)], [_sentence(100 + i) for i in range(22)]
    rows = [f"{text}\tbilling" for text in billing] + [f"{text}\tshipping" for text in shipping]
    rows += [
        f"{billing[3]}\tbilling",  # exact duplicate
        f"{billing[3]}\tBill",  # duplicate via label_map
        f"{shipping[5].replace(' ', '   ', 2)}\tshipping",  # duplicate after whitespace folding
        f"{shipping[7]}\tbilling",  # label conflict (minority)
        "please send me a refund for the broken lamp\trefund",  # unknown label
        "too many\tfields\there",  # ragged row
        "\tshipping",  # empty text
        "the courier left my parcel at the wrong door\tshipping",
    ]
    (root / "corpus.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")


def _png(seed: int, shape: str) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
    x, y = rng.integers(2, 14, 2)
    if shape == "square":
        pixels[y : y + 14, x : x + 14] = rng.integers(0, 256, 3)
    else:
        yy, xx = np.mgrid[:32, :32]
        pixels[(yy - y - 8) ** 2 + (xx - x - 8) ** 2 < 49] = rng.integers(0, 256, 3)
    texture = rng.integers(-40, 41, pixels.shape)  # so no picture is near-constant for normalise's quality check
    pixels = np.clip(pixels.astype(int) + texture, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(root: Path) -> None:
    """15 PNGs per class, one duplicate picture, an empty file, a non-image file and a cut JPEG."""
    for k, label in enumerate(("circle", "square")):
        folder = root / "images" / label
        folder.mkdir(parents=True)
        for i in range(15):
            (folder / f"{i:02d}.png").write_bytes(_png(100 * k + i, label))
    (root / "images" / "square" / "copy_of_00.png").write_bytes(_png(100, "square"))
    (root / "images" / "circle" / "empty.png").write_bytes(b"")
    (root / "images" / "circle" / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    (root / "images" / "square" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    write_corpus(root)
    write_images(root)
    return root


# --- running the chain ----------------------------------------------------------------------

def run_chain(root: Path, out: Path, dataset: str, **sections) -> Path:
    """Run the six stages for `dataset` with outputs under `out`; return `out`."""
    out.mkdir(parents=True, exist_ok=True)
    params = write_params(out / "params.yaml", DATASETS, **(SECTIONS | sections))
    d, m, led = out / "data", out / "metrics", out / "ledger"

    def common(stage: str) -> list[str]:
        return ["--dataset", dataset, "--params", str(params), "--metrics", str(m / f"{stage}.json"),
                "--timings", str(m / "timings" / f"{stage}.json"), "--ledger", str(led / f"{stage}.parquet")]

    calls = [
        (clean, ["--root", str(root), "--output", str(d / "clean.parquet")]),
        (normalise, ["--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet")]),
        (dedup, ["--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet")]),
        (split, ["--input", str(d / "dedup.parquet"), "--output", str(d / "split"), "--leakage", str(d / "final" / "leakage.json")]),
        (augment, ["--input", str(d / "split"), "--output", str(d / "augment" / "train.parquet"),
                   "--preview", str(d / "augment" / "preview")]),
        (rebalance, ["--train", str(d / "augment" / "train.parquet"), "--split", str(d / "split"),
                     "--output", str(d / "final")]),
    ]
    for module, args in calls:
        stage = module.__name__.rsplit(".", 1)[-1]
        assert module.main([*common(stage), *args]) == 0, f"{stage} failed"
    return out


def parquet_hashes(out: Path) -> dict[str, str]:
    """SHA-256 of every Parquet file under `out`, by relative path."""
    files = sorted(p for p in out.rglob("*.parquet") if p.is_file())
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def card(out: Path) -> dict:
    return json.loads((out / "data" / "final" / "card.json").read_text())


@pytest.fixture(scope="module", params=["t", "im"])
def chain(request, inputs, tmp_path_factory) -> tuple[str, Path]:
    """One finished chain per modality."""
    return request.param, run_chain(inputs, tmp_path_factory.mktemp(f"run-{request.param}"), request.param)


# --- accounting -----------------------------------------------------------------------------

@pytest.mark.parametrize("stage", STAGES)
def test_metrics_balance(chain, stage):
    """Every stage's metrics hold the standard counts, and in + generated == out + merged + dropped;
    its wall-clock seconds are in its timings file, not in the metrics (which repeat run to run)."""
    _, out = chain
    metrics = json.loads((out / "metrics" / f"{stage}.json").read_text())
    assert {"in", "out", "generated", "merged", "dropped"} <= set(metrics) and "seconds" not in metrics
    assert json.loads((out / "metrics" / "timings" / f"{stage}.json").read_text())["seconds"] > 0
    assert metrics["in"] + metrics["generated"] == metrics["out"] + metrics["merged"] + sum(metrics["dropped"].values())


@pytest.mark.parametrize("stage", STAGES)
def test_ledger_matches_metrics(chain, stage):
    """The ledger holds one row per dropped, merged, generated or flagged record, as the metrics count them."""
    _, out = chain
    metrics = json.loads((out / "metrics" / f"{stage}.json").read_text())
    ledger = pq.read_table(out / "ledger" / f"{stage}.parquet").to_pandas()
    assert set(ledger["stage"]) <= {stage}
    assert not ledger.duplicated(["id", "fate"]).any()  # a variant may be generated, then dropped
    by_fate = {fate: Counter(rows["reason"]) for fate, rows in ledger.groupby("fate")}
    assert dict(by_fate.get("dropped", {})) == metrics["dropped"]
    assert sum(by_fate.get("generated", Counter()).values()) == metrics["generated"]
    assert sum(by_fate.get("merged", Counter()).values()) == metrics["merged"]
    assert dict(by_fate.get("flagged", {})) == metrics.get("flagged", {})


def test_stage_outputs_match_metrics(chain):
    """Each record set holds as many records as its stage reports out."""
    _, out = chain
    data, metrics = out / "data", {s: json.loads((out / "metrics" / f"{s}.json").read_text()) for s in STAGES}
    for stage in ("clean", "normalise", "dedup"):
        assert len(read_records(data / f"{stage}.parquet")) == metrics[stage]["out"]
    assert sum(len(read_records(data / "split" / f"{s}.parquet")) for s in ("train", "val", "test")) == metrics["split"]["out"]
    assert len(read_records(data / "augment" / "train.parquet")) == metrics["augment"]["out"]
    assert len(read_records(data / "final" / "train.parquet")) == metrics["rebalance"]["out"]


def test_clean_drops_bad_rows_with_reasons(chain):
    """The ragged row, unknown label and empty text (or the empty and non-image files) are dropped by reason."""
    dataset, out = chain
    dropped = json.loads((out / "metrics" / "clean.json").read_text())["dropped"]
    expected = {"ragged_row": 1, "unknown_label": 1, "empty_text": 1} if dataset == "t" else {"empty_file": 1, "not_an_image_file": 1}
    assert dropped == expected
    ledger = pq.read_table(out / "ledger" / "clean.parquet").to_pandas()
    assert ledger["detail"].notna().all()
    assert not ledger["detail"].str.contains(str(out.parent), regex=False).any()  # no absolute paths


def test_normalise_drops_pixels_that_do_not_decode_naming_the_file(chain):
    """A JPEG cut in its pixel data passes clean's header checks and fails normalise's one decode."""
    dataset, out = chain
    if dataset == "t":
        pytest.skip("image chain only")
    ledger = pq.read_table(out / "ledger" / "normalise.parquet").to_pandas()
    dropped = ledger[ledger["fate"] == "dropped"]
    assert list(dropped["reason"]) == ["corrupt_image"]
    assert dropped["detail"].iloc[0].startswith("square/cut.jpg: ")


def test_dedup_merges_duplicates(chain):
    """Duplicates are merged, and the label conflict's minority is merged with its reason."""
    dataset, out = chain
    ledger = pq.read_table(out / "ledger" / "dedup.parquet").to_pandas()
    reasons = Counter(ledger.loc[ledger["fate"] == "merged", "reason"])
    expected = {"exact_duplicate": 3, "label_conflict_minority": 1} if dataset == "t" else {"exact_duplicate": 1}
    assert reasons == expected
    kept = set(read_records(out / "data" / "dedup.parquet")["id"])
    assert set(ledger["into"].dropna()) <= kept


# --- final dataset --------------------------------------------------------------------------

def _final(out: Path) -> dict[str, pd.DataFrame]:
    return {s: read_records(out / "data" / "final" / f"{s}.parquet") for s in ("train", "val", "test")}


def test_final_splits_are_disjoint(chain):
    """No id and no group is in two splits; every class is in every split."""
    _, out = chain
    final = _final(out)
    for column in ("id", "group_id"):
        seen = Counter(v for frame in final.values() for v in set(frame[column]))
        assert max(seen.values()) == 1, column
    labels = set(final["train"]["label"])
    assert all(set(frame["label"]) == labels for frame in final.values())


def test_generated_records_live_in_train_with_their_parents(chain):
    """Augmented and oversampled records are only in train, and their parents are train originals."""
    _, out = chain
    final = _final(out)
    for name in ("val", "test"):
        assert final[name]["parent_id"].isna().all()
    train = final["train"]
    children = train[train["parent_id"].notna()]
    assert len(children) > 0
    originals = set(train.loc[train["parent_id"].isna(), "id"])
    assert set(children["parent_id"]) <= originals
    ops = {json.loads(op)["op"] for op in children["op"]}
    assert ops == {"augment", "oversample"}


def test_card_written_with_version(chain):
    """card.json exists, names a version, and counts the final records."""
    dataset, out = chain
    written = card(out)
    assert len(written["version"]) == 64
    assert written["dataset"] == dataset
    final = _final(out)
    assert written["records"] == {s: len(f) for s, f in final.items()}
    rebalance_metrics = json.loads((out / "metrics" / "rebalance.json").read_text())
    assert rebalance_metrics["version"] == written["version"]
    classes = written["classes"]["train"]
    assert len(set(classes.values())) == 1  # random_over at 1:1


# --- reproducibility ------------------------------------------------------------------------

def test_chain_is_byte_reproducible(chain, inputs, tmp_path):
    """A second run gives byte-identical Parquet files (records and ledgers) and the same card."""
    dataset, first = chain
    second = run_chain(inputs, tmp_path / "again", dataset)
    assert parquet_hashes(second) == parquet_hashes(first)
    assert card(second) == card(first)


@pytest.mark.slow  # each stage starts its processes; the e2e tests force the data stages on 2 processes too
@pytest.mark.parametrize("chain", ["t", "im"], indirect=True)
def test_workers_do_not_change_results(chain, inputs, tmp_path):
    """engine.workers=2, in partitions of 16 records, gives the same bytes as workers=1 in one."""
    dataset, first = chain
    engine = {"workers": 2, "partition_rows": 16 * 32 if dataset == "im" else 16, "chunk_size": 16}
    parallel = run_chain(inputs, tmp_path / "workers2", dataset, engine=engine)
    assert parquet_hashes(parallel) == parquet_hashes(first)
    assert card(parallel) == card(first)


# --- errors ---------------------------------------------------------------------------------

def _clean_args(params: Path, root: Path, dataset: str = "t") -> list[str]:
    return ["--dataset", dataset, "--params", str(params), "--root", str(root),
            "--output", str(root / "clean.parquet"), "--metrics", str(root / "m.json")]


def test_main_keeps_callers_log_handlers(tmp_path, caplog):
    """Calling a stage's main in process leaves the caller's root log handlers working."""
    params = write_params(tmp_path / "params.yaml", DATASETS)
    with caplog.at_level(logging.INFO):
        assert clean.main(_clean_args(params, tmp_path, dataset="nope")) == 2
    assert "'nope'" in caplog.text


def test_bad_param_returns_2_naming_the_key(tmp_path, stage_log):
    """An invalid params value exits 2 with a message naming the dotted key, and writes nothing."""
    params = write_params(tmp_path / "params.yaml", DATASETS, split={"train": 2, "val": 0.1, "test": 0.1})
    assert clean.main(_clean_args(params, tmp_path)) == 2
    assert "split.train" in stage_log.text
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "clean.parquet").exists()


def test_unknown_params_key_returns_2_naming_it(tmp_path, stage_log):
    """A misspelt key is refused with its dotted path."""
    params = write_params(tmp_path / "params.yaml", DATASETS, dedup={"survivr": "longest"})
    assert clean.main(_clean_args(params, tmp_path)) == 2
    assert "dedup.survivr" in stage_log.text and "unknown key" in stage_log.text


def test_missing_source_returns_1_with_message(tmp_path, stage_log):
    """A source that does not exist exits 1 with a message naming it."""
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "nowhere.tsv", "format": "tsv"}})
    assert clean.main(_clean_args(params, tmp_path)) == 1
    assert "nowhere.tsv" in stage_log.text and "does not exist" in stage_log.text
    assert not (tmp_path / "clean.parquet").exists()


def test_unknown_dataset_returns_2(tmp_path, stage_log):
    """A dataset name missing from params exits 2 and lists the known names."""
    params = write_params(tmp_path / "params.yaml", DATASETS)
    assert clean.main(_clean_args(params, tmp_path, dataset="nope")) == 2
    assert "'nope'" in stage_log.text and "'t'" in stage_log.text


@pytest.mark.parametrize("dataset, target", [("t", {"shipping": 30}), ("im", {"circle": 16})])
def test_augment_over_makes_fresh_variants_of_minority_originals(inputs, tmp_path, dataset, target):
    """rebalance augment_over: the new minority records are augmented variants (not copies) of train originals."""
    out = run_chain(inputs, tmp_path / "run", dataset, augment={"text": {"variants": 0}, "image": {"variants": 0}},
                    rebalance={"strategy": "augment_over", "counts": target})
    train = _final(out)["train"]
    made = train[train["parent_id"].notna()]
    assert len(made) > 0 and {json.loads(op)["op"] for op in made["op"]} == {"augment"}
    assert set(made["parent_id"]) <= set(train.loc[train["parent_id"].isna(), "id"])
    assert made["content_hash"].isin(train.loc[train["parent_id"].isna(), "content_hash"]).sum() == 0  # none is a copy
    ledger = pq.read_table(out / "ledger" / "rebalance.parquet").to_pandas()
    assert set(ledger.loc[ledger["fate"] == "generated", "reason"]) == {"augmented_oversample"}
    metrics = json.loads((out / "metrics" / "rebalance.json").read_text())
    assert metrics["in"] + metrics["generated"] == metrics["out"] + sum(metrics["dropped"].values())
    (label, wanted), = target.items()
    assert (train["label"] == label).sum() == wanted - sum(metrics["dropped"].values())  # but for dropped repeats
