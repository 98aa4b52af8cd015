"""The embed and label_issues stages: every record after dedup embedded once, wrong labels flagged.

A corpus of support tickets written from the demo's topic templates, with 5% of its labels
swapped to another topic at known rows, goes through clean, normalise, dedup, embed (the real
MiniLM) and label_issues: most swapped labels are flagged, few correct ones, each in the ledger
and the issues table.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_params
from pipeline.demo import CLOSERS, CONTEXT, OPENERS, TOPICS
from pipeline.io import read_records
from pipeline.stages import clean, dedup, embed, label_issues, normalise


def write_tickets(root: Path, n: int = 240) -> set[int]:
    """`n` tickets; the source rows whose label was swapped."""
    gen = np.random.default_rng(11)
    names = sorted(TOPICS)
    rows, swapped = [], set()
    for i in range(n):
        topic = names[i % len(names)]
        _, nouns, templates = TOPICS[topic]
        body = templates[gen.integers(len(templates))].format(n=nouns[gen.integers(len(nouns))])
        context = gen.choice(len(CONTEXT), 2, replace=False)
        text = " ".join(p for p in (OPENERS[gen.integers(len(OPENERS))], CONTEXT[context[0]], body + ".",
                                    CONTEXT[context[1]], CLOSERS[gen.integers(len(CLOSERS))]) if p)
        label = topic
        if i % 20 == 7:
            label = names[(names.index(topic) + 1) % len(names)]
            swapped.add(i + 2)  # after the header, rows count from 1
        rows.append(f"{text}\t{label}")
    (root / "corpus.tsv").write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return swapped


def run(root: Path, **sections) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    params = write_params(root / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}}, **sections)
    d, common = root / "out", ["--dataset", "t", "--params", str(params)]
    assert clean.main([*common, "--root", str(root), "--output", str(d / "clean.parquet"), "--metrics", str(d / "c.json")]) == 0
    assert normalise.main([*common, "--input", str(d / "clean.parquet"), "--output", str(d / "n.parquet"), "--metrics", str(d / "n.json")]) == 0
    assert dedup.main([*common, "--input", str(d / "n.parquet"), "--output", str(d / "dedup.parquet"), "--metrics", str(d / "d.json")]) == 0
    assert embed.main([*common, "--input", str(d / "dedup.parquet"), "--output", str(d / "embeddings.parquet"),
                       "--metrics", str(d / "e.json")]) == 0
    return review(root, d, params)


def review(root: Path, d: Path, params: Path, name: str = "") -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Run label_issues on dedup's records in `d` (outputs named after `name`): metrics, issues, ledger."""
    assert label_issues.main(["--dataset", "t", "--params", str(params), "--input", str(d / "dedup.parquet"),
                              "--embeddings", str(d / "embeddings.parquet"), "--output", str(d / f"issues{name}.parquet"),
                              "--records", str(d / f"reviewed{name}.parquet"), "--ledger", str(d / f"ledger{name}.parquet"),
                              "--metrics", str(d / f"l{name}.json")]) == 0
    return (json.loads((d / f"l{name}.json").read_text()), pd.read_parquet(d / f"issues{name}.parquet"),
            pd.read_parquet(d / f"ledger{name}.parquet"))


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    root = tmp_path_factory.mktemp("tickets")
    swapped = write_tickets(root)
    metrics, issues, ledger = run(root)
    records = read_records(root / "out" / "dedup.parquet")
    records.attrs["embeddings"] = root / "out" / "embeddings.parquet"
    swapped_ids = set(records.loc[records["source_row"].isin(swapped), "id"])
    return metrics, issues, ledger, swapped_ids, records


def test_most_swapped_labels_are_flagged_and_few_correct_ones(found):
    metrics, issues, _, swapped_ids, records = found
    assert len(swapped_ids) == 12 and metrics["in"] == metrics["out"] == len(records)
    flagged = set(issues["id"])
    assert len(flagged & swapped_ids) >= 9  # recall >= 0.75
    assert len(flagged - swapped_ids) <= 3
    assert metrics["label_issues"] == len(issues) and metrics["flagged"] == {"label_issue": len(issues)}
    assert sum(metrics["by_labels"].values()) == len(issues)
    assert metrics["features"] == "embeddings and character n-grams (averaged)"  # label_issues.text_ngrams, on by default


def test_each_issue_is_in_the_ledger_and_ranked_from_the_least_likely_label(found):
    _, issues, ledger, _, records = found
    assert list(issues["rank"]) == list(range(1, len(issues) + 1))
    assert issues["self_confidence"].is_monotonic_increasing
    assert (issues["given_label"] != issues["suggested_label"]).all()
    given = records.set_index("id").loc[issues["id"], "label"].tolist()
    assert given == issues["given_label"].tolist()
    rows = ledger.set_index("id").loc[issues["id"]]
    assert (rows["fate"] == "flagged").all() and (rows["reason"] == "label_issue").all()
    assert rows["detail"].str.match(r"^given \w+, suggested \w+; probability of the given label 0\.\d{3}, "
                                    r"of the suggested [01]\.\d{3}$").all()
    assert (issues["action"] == "flagged").all() and issues["suggested_probability"].between(0, 1).all()


def test_the_flag_policy_passes_every_record_on_unchanged(found):
    *_, records = found
    reviewed = read_records(records.attrs["embeddings"].parent / "reviewed.parquet")
    assert reviewed.sort_values("id").reset_index(drop=True).equals(records.sort_values("id").reset_index(drop=True))


def test_policy_drop_removes_every_issue_with_its_reason(found, tmp_path):
    _, flagged, _, _, records = found
    d = records.attrs["embeddings"].parent
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          label_issues={"policy": "drop"})
    metrics, issues, ledger = review(tmp_path, d, params, name="_drop")
    assert issues["id"].tolist() == flagged["id"].tolist() and (issues["action"] == "dropped").all()
    assert metrics["dropped"] == {"label_issue": len(issues)} and metrics["out"] == len(records) - len(issues)
    assert set(ledger.loc[ledger["fate"] == "dropped", "id"]) == set(issues["id"])
    reviewed = read_records(d / "reviewed_drop.parquet")
    assert set(reviewed["id"]) == set(records["id"]) - set(issues["id"])


def test_policy_relabel_takes_the_suggested_label_only_where_it_is_sure_enough(found, tmp_path):
    _, flagged, _, _, records = found
    d = records.attrs["embeddings"].parent
    confidence = float(flagged["suggested_probability"].median())
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                          label_issues={"policy": "relabel", "relabel_confidence": confidence})
    metrics, issues, ledger = review(tmp_path, d, params, name="_relabel")
    sure = issues["suggested_probability"] >= confidence
    assert 0 < sure.sum() < len(issues) and metrics["relabelled"] == int(sure.sum())
    assert (issues.loc[sure, "action"] == "relabelled").all() and (issues.loc[~sure, "action"] == "flagged").all()
    assert metrics["flagged"] == {"relabelled": int(sure.sum()), "label_issue": int((~sure).sum())} and metrics["out"] == len(records)
    reviewed = read_records(d / "reviewed_relabel.parquet").set_index("id")["label"]
    before = records.set_index("id")["label"]
    changed = reviewed[reviewed != before.loc[reviewed.index]]
    assert dict(changed) == dict(zip(issues.loc[sure, "id"], issues.loc[sure, "suggested_label"]))
    assert set(ledger.loc[ledger["reason"] == "relabelled", "id"]) == set(changed.index)


def test_embeddings_cover_every_record_after_dedup_in_id_order(found):
    *_, records = found
    embeddings = pd.read_parquet(records.attrs["embeddings"])
    assert embeddings["id"].tolist() == sorted(records["id"])
    assert {len(v) for v in embeddings["features"]} == {384}  # MiniLM's width


@pytest.mark.parametrize(("sections", "why"), [
    ({"label_issues": {"policy": "off"}}, "policy off"),
    ({"label_issues": {"folds": 50}}, "fewer than two classes of at least 50 records"),
])
def test_a_search_that_cannot_run_says_why_and_flags_nothing(tmp_path, sections, why):
    write_tickets(tmp_path, n=60)
    metrics, issues, ledger = run(tmp_path, **sections)
    assert why in metrics["not_searched"] and len(issues) == 0 and len(ledger) == 0


def test_a_class_smaller_than_the_folds_is_left_out_and_the_rest_searched(tmp_path):
    write_tickets(tmp_path)
    lines = (tmp_path / "corpus.tsv").read_text().splitlines()
    lines += [f"{lines[1].split(chr(9))[0]} and one more thing {i}\trare" for i in range(3)]  # a class of 3 records
    (tmp_path / "corpus.tsv").write_text("\n".join(lines) + "\n")
    metrics, issues, _ = run(tmp_path)
    assert metrics["classes_left_out"] == ["rare"] and "not_searched" not in metrics
    assert "rare" not in set(issues["given_label"]) | set(issues["suggested_label"]) and len(issues) > 0


def test_a_dataset_section_replaces_the_global_policy(found, tmp_path):
    _, flagged, _, _, records = found
    d = records.attrs["embeddings"].parent
    params = write_params(tmp_path / "params.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv",
                                                           "label_issues": {"policy": "drop"}}}, label_issues={"policy": "flag"})
    metrics, issues, _ = review(tmp_path, d, params, name="_own")
    assert metrics["policy"] == "drop" and metrics["dropped"] == {"label_issue": len(flagged)} and (issues["action"] == "dropped").all()


@pytest.mark.slow
def test_a_dask_cluster_reviews_the_records_as_the_local_engine_does(found, tmp_path):
    """Relabel under a LocalCluster of two worker processes, in small partitions: the same issues,
    ledger and record set, byte for byte."""
    *_, records = found
    d = records.attrs["embeddings"].parent
    outputs = {}
    for name, engine in (("local", {}), ("dask", {"kind": "dask", "partition_rows": 50, "dask": {"workers": 2, "memory_limit": "1GB"}})):
        params = write_params(tmp_path / f"{name}.yaml", {"t": {"modality": "text", "source": "corpus.tsv", "format": "tsv"}},
                              label_issues={"policy": "relabel", "relabel_confidence": 0.5}, engine=engine)
        review(tmp_path, d, params, name=f"_{name}")
        shards = sorted((d / f"reviewed_{name}.parquet").rglob("*.parquet"))
        outputs[name] = [(d / f"issues_{name}.parquet").read_bytes(), (d / f"ledger_{name}.parquet").read_bytes(),
                         [(p.relative_to(d / f"reviewed_{name}.parquet"), p.read_bytes()) for p in shards]]
    assert outputs["dask"] == outputs["local"]
