"""Decontamination: corpus records that copy an evaluation set are dropped with the set named.

Unit tests of `pipeline.steps.decontaminate`, the dedup stage with `decontaminate.sets` (local and
on a Dask cluster: same bytes), and the real SMS corpus decontaminated against its own other half
with planted copies and near copies.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import SHARED, write_params
from pipeline.params import DedupParams
from pipeline.records import pixel_hash, text_hash
from pipeline.stages import clean, dedup, normalise
from pipeline.steps.decontaminate import build_reference, decontaminate_partition, matches
from pipeline.steps.neardup import NearDupSettings

SETTINGS = NearDupSettings.from_params(DedupParams().text, certify=True)
WORDS = ("invoice parcel refund courier depot charge account delivery monday card address label box order tracking "
         "payment receipt week late broken lamp door price twice wrong").split()


def sentence(seed: int, words: int = 14) -> str:
    gen = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in gen.choice(len(WORDS), words, replace=True))


def texts(values: list[str], prefix: str, source: str = "corpus.tsv") -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{prefix}{i:03d}" for i in range(len(values))], "text": values,
                         "content_hash": [text_hash(v) for v in values], "source": source,
                         "source_row": list(range(2, len(values) + 2)), "label": "x"})


def edited(text: str) -> str:
    """A typo in the middle word (a letter left out): a near copy, character 5-gram Jaccard about 0.9."""
    words = text.split()
    words[len(words) // 2] = words[len(words) // 2][:-2] + words[len(words) // 2][-1]
    return " ".join(words)


def test_exact_and_near_copies_are_found_and_name_what_they_copy():
    evaluation = [sentence(1000 + i) for i in range(20)]
    corpus = [sentence(i) for i in range(30)] + [evaluation[3], edited(evaluation[7])]
    reference = build_reference([("bench", texts(evaluation, "e", "bench.tsv"))], "text", DedupParams(), SETTINGS)
    found = matches(texts(corpus, "c"), reference).set_index("id")
    assert list(found.index) == ["c030", "c031"]
    assert found.loc["c030", "detail"] == "bench.tsv:5 (identical content)"
    assert found.loc["c031", "detail"].startswith("bench.tsv:9 (jaccard 0.")
    assert set(found["set"]) == {"bench"}


def test_without_near_only_identical_content_counts():
    evaluation = [sentence(1000 + i) for i in range(5)]
    corpus = [evaluation[0], edited(evaluation[1])]
    reference = build_reference([("bench", texts(evaluation, "e"))], "text", DedupParams(), None)
    assert matches(texts(corpus, "c"), reference)["id"].tolist() == ["c000"]


def test_a_record_copying_two_sets_is_dropped_once_for_the_first_set():
    shared = sentence(5)
    reference = build_reference([("a", texts([shared], "a")), ("b", texts([shared], "b"))], "text", DedupParams(), SETTINGS)
    processed = decontaminate_partition(texts([shared, sentence(6)], "c"), reference)
    assert processed.records["id"].tolist() == ["c001"]
    assert dict(processed.counts) == {"contaminates:a": 1}


def test_partitions_find_what_the_whole_finds():
    evaluation = [sentence(2000 + i) for i in range(40)]
    corpus = [sentence(i) for i in range(60)] + evaluation[::4] + [edited(t) for t in evaluation[1::4]]
    records = texts(corpus, "c")
    reference = build_reference([("bench", texts(evaluation, "e"))], "text", DedupParams(), SETTINGS)
    whole = matches(records, reference)
    parts = pd.concat([matches(records.iloc[i:i + 7], reference) for i in range(0, len(records), 7)], ignore_index=True)
    pd.testing.assert_frame_equal(whole, parts)
    assert len(whole) == 20


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def photo(seed: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    blocks = gen.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))


def images(pixels: list[np.ndarray], prefix: str) -> pd.DataFrame:
    blobs = [png(p) for p in pixels]
    return pd.DataFrame({"id": [f"{prefix}{i:03d}" for i in range(len(blobs))], "image": blobs, "label": "x",
                         "content_hash": [pixel_hash("RGB", (p.shape[1], p.shape[0]), p.tobytes()) for p in pixels],
                         "source": [f"{prefix}/{i}.png" for i in range(len(blobs))], "source_row": None})


def test_near_copies_of_images_are_found_by_their_perceptual_hash():
    evaluation = [photo(100 + i) for i in range(10)]
    brighter = np.clip(evaluation[4].astype(int) + 6, 0, 255).astype(np.uint8)
    corpus = [photo(i) for i in range(10)] + [evaluation[2], brighter]
    reference = build_reference([("bench", images(evaluation, "e"))], "image", DedupParams(), SETTINGS)
    found = matches(images(corpus, "c"), reference).set_index("id")
    assert list(found.index) == ["c010", "c011"]
    assert found.loc["c010", "detail"] == "e/2.png (identical content)"
    assert found.loc["c011", "detail"].startswith("e/4.png (hamming ")


# --- the stage ------------------------------------------------------------------------------

def write_sources(root: Path) -> list[str]:
    """A labelled corpus and an evaluation set under data/eval; the corpus ids that copy it."""
    evaluation = [sentence(3000 + i) for i in range(30)]
    corpus = [sentence(i) for i in range(80)]
    planted = {5: evaluation[0], 17: edited(evaluation[1]), 40: evaluation[2].upper(), 63: edited(evaluation[3])}
    for row, text in planted.items():
        corpus[row] = text
    (root / "corpus.tsv").write_text("text\tlabel\n" + "".join(f"{t}\t{'ab'[i % 2]}\n" for i, t in enumerate(corpus)))
    (root / "data" / "eval").mkdir(parents=True)
    (root / "data" / "eval" / "bench.tsv").write_text("question\n" + "".join(f"{t}\n" for t in evaluation))
    return [f"corpus.tsv:{row + 2}" for row in sorted(planted)]


def run_dedup(root: Path, engine: dict) -> tuple[dict, pd.DataFrame, str]:
    sets = {"bench": {"modality": "text", "source": "data/eval/bench.tsv", "format": "tsv",
                      "columns": {"text": "question", "label": "question"}}}
    params = write_params(root / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          engine=engine, decontaminate={"sets": sets})
    d, common = root / "out", ["--dataset", "t", "--params", str(params)]
    assert clean.main([*common, "--root", str(root), "--output", str(d / "clean.parquet"), "--metrics", str(d / "clean.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "normalise.parquet"),
                           "--metrics", str(d / "normalise.json")]) == 0
    assert dedup.main([*common, "--root", str(root), "--input", str(d / "normalise.parquet"), "--output", str(d / "dedup.parquet"),
                       "--ledger", str(d / "ledger.parquet"), "--metrics", str(d / "dedup.json")]) == 0
    digest = hashlib.sha256()
    for path in sorted((d / "dedup.parquet").rglob("*.parquet")) + [d / "ledger.parquet"]:
        digest.update(path.read_bytes())
    return json.loads((d / "dedup.json").read_text()), pd.read_parquet(d / "ledger.parquet"), digest.hexdigest()


@pytest.mark.parametrize("engine", [
    {"partition_rows": 25},
    pytest.param({"kind": "dask", "partition_rows": 30, "dask": {"workers": 2, "memory_limit": "1GB"}}, marks=pytest.mark.slow),
])
def test_dedup_drops_every_copy_of_an_evaluation_record_with_its_set_named(tmp_path_factory, engine):
    whole_root, other_root = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("other")
    planted = write_sources(whole_root)
    write_sources(other_root)
    metrics, ledger, digest = run_dedup(whole_root, {})
    assert metrics["decontaminated"] == {"bench": 4} and metrics["dropped"] == {"contaminates:bench": 4}
    assert metrics["in"] == metrics["out"] + metrics["merged"] + 4
    dropped = ledger[ledger["reason"] == "contaminates:bench"]
    assert dropped["detail"].str.match(r"^bench\.tsv:\d+ \((identical content|jaccard [01]\.\d+)\)$").all()
    assert len(dropped) == len(planted)
    assert run_dedup(other_root, engine)[2] == digest


def test_an_evaluation_set_outside_its_root_is_refused_naming_the_key(tmp_path, capsys):
    write_sources(tmp_path)
    sets = {"bench": {"modality": "text", "source": "bench.tsv", "format": "tsv"}}
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          decontaminate={"sets": sets})
    code = dedup.main(["--dataset", "t", "--params", str(params), "--input", str(tmp_path / "none"),
                       "--output", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")])
    assert code == 2


def test_a_missing_column_of_an_evaluation_set_names_its_key(tmp_path, caplog):
    write_sources(tmp_path)
    sets = {"bench": {"modality": "text", "source": "data/eval/bench.tsv", "format": "tsv"}}  # its column is 'question'
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          decontaminate={"sets": sets})
    d, common = tmp_path / "out", ["--dataset", "t", "--params", str(params)]
    assert clean.main([*common, "--root", str(tmp_path), "--output", str(d / "clean.parquet"), "--metrics", str(d / "c.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "n.parquet"), "--metrics", str(d / "n.json")]) == 0
    code = dedup.main([*common, "--root", str(tmp_path), "--input", str(d / "n.parquet"), "--output", str(d / "d.parquet"),
                       "--metrics", str(d / "d.json")])
    assert code == 1 and "decontaminate.sets.bench.columns" in caplog.text and "Traceback" not in caplog.text


# --- real data ------------------------------------------------------------------------------

def typo(text: str) -> str:
    """A letter left out of the longest word: what a copy pasted and retouched looks like."""
    words = text.split(" ")
    longest = max(range(len(words)), key=lambda i: (len(words[i]), -i))
    words[longest] = words[longest][:-2] + words[longest][-1:]
    return " ".join(words)


@pytest.mark.slow  # three stages over 5,574 real messages
def test_half_of_sms_decontaminated_against_the_other_half_catches_every_planted_copy(tmp_path):
    """SMS's odd rows are the evaluation set; its even rows the corpus, with 40 of the evaluation
    messages planted as they are and 40 with a typo (verified near copies). Every planted record is
    dropped as contaminating, or merged into a record that is; the natural repeats across the two
    halves are caught too."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED} (they exist beside the checkout in CI only)")
    lines = (SHARED / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8").splitlines()[1:]
    corpus, evaluation = lines[0::2], lines[1::2]
    gen = np.random.default_rng(19)
    long_ones = [i for i, line in enumerate(evaluation) if len(line.split("\t", 1)[1]) >= 60]
    chosen = gen.choice(long_ones, 80, replace=False).tolist()
    planted = [evaluation[i] for i in chosen[:40]]
    planted += [f"{label}\t{typo(text)}" for label, text in (evaluation[i].split("\t", 1) for i in chosen[40:])]
    first_planted_row = len(corpus) + 2  # after the header and the corpus rows
    (tmp_path / "corpus.tsv").write_text("label\ttext\n" + "\n".join(corpus + planted) + "\n", encoding="utf-8")
    (tmp_path / "data" / "eval").mkdir(parents=True)
    (tmp_path / "data" / "eval" / "sms_odd.tsv").write_text("label\ttext\n" + "\n".join(evaluation) + "\n", encoding="utf-8")
    sets = {"sms_odd": {"modality": "text", "source": "data/eval/sms_odd.tsv", "format": "tsv"}}
    params = write_params(tmp_path / "params.yaml", {"sms": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          decontaminate={"sets": sets})
    d, common = tmp_path / "out", ["--dataset", "sms", "--params", str(params)]
    assert clean.main([*common, "--root", str(tmp_path), "--output", str(d / "clean.parquet"), "--metrics", str(d / "c.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "n.parquet"), "--metrics", str(d / "n.json")]) == 0
    assert dedup.main([*common, "--root", str(tmp_path), "--input", str(d / "n.parquet"), "--output", str(d / "d.parquet"),
                       "--ledger", str(d / "ledger.parquet"), "--metrics", str(d / "d.json")]) == 0
    from pipeline.io import read_records

    records = read_records(d / "n.parquet")
    planted_ids = set(records.loc[records["source_row"] >= first_planted_row, "id"])
    assert len(planted_ids) == 80
    ledger = pd.read_parquet(d / "ledger.parquet")
    caught = set(ledger.loc[ledger["reason"] == "contaminates:sms_odd", "id"])
    merged_into = dict(zip(ledger.loc[ledger["fate"] == "merged", "id"], ledger.loc[ledger["fate"] == "merged", "into"]))
    assert {i for i in planted_ids if i not in caught and merged_into.get(i) not in caught} == set()
    typos = ledger[ledger["id"].isin(planted_ids) & ledger["detail"].str.contains("jaccard", na=False)]
    assert len(typos) >= 30  # most retouched copies are caught as near copies (the rest merged into one that was)
    metrics = json.loads((d / "d.json").read_text())
    assert metrics["decontaminated"]["sms_odd"] > 80  # the natural repeats across the halves as well
