"""Benchmark: clean -> normalise -> dedup -> split on generated short texts, by engine and size.

    .venv/bin/python benchmarks/bench_engine_scale.py --docs 1000000,5000000 --engine local
    .venv/bin/python benchmarks/bench_engine_scale.py --docs 1000000 --engine both

The corpus is `bench_text_scale`'s (seeded short texts from a Zipf vocabulary, three labels, a
tenth exact copies and a tenth edited copies, some rows needing repair). For each size and engine
the real stages run one after the other, each in a process of its own as `dvc repro` runs them,
with default params but `engine`:

* local: the default engine, in the stage's process; the peak RSS is that process's (the
  kernel's accounting of the stage's process alone).
* dask: a LocalCluster of 2 worker processes of 3 GB each, started by this benchmark and joined
  by every stage through `engine.dask.scheduler_address`; the peak RSS is each worker's own
  (ru_maxrss over the run, all stages) and the stage process's, as for local.

It prints one JSON object: per run, seconds and peak RSS per stage, the planted and merged counts
(near-duplicate recall and precision against exact Jaccard are `bench_text_dedup`'s: the same
search); across sizes, the time ratio and the peak RSS ratio of the largest to the smallest;
with `both`, the dask/local time ratio on the same corpus and whether their outputs are the same
bytes. Targets (issue 16): local peak RSS at 5M under 1.5x the peak at 1M, time(5M) / time(1M) at
most 5.5; dask workers each under 3 GB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_text_scale import LABELS, make_rows, write_corpus  # noqa: E402
from measure import bench_engine, child_json, engine_ratios, run_stages  # noqa: E402

STAGES = ("clean", "normalise", "dedup", "split")
TARGETS = {"peak_rss_ratio_5m_over_1m": 1.5, "time_ratio_5m_over_1m": 5.5, "dask_worker_peak_gib": 3.0}


def write_params(folder: Path, source: Path, engine: dict[str, Any]) -> Path:
    path = folder / "params.yaml"
    dataset = {"modality": "text", "source": str(source), "format": "tsv", "labels": LABELS}
    path.write_text(yaml.safe_dump({"datasets": {"bench": dataset}, "engine": engine}, sort_keys=False))
    return path


def merges(folder: Path) -> dict[str, int]:
    """Dedup's merges by reason, and how many of the planted edited copies are among its near merges
    (an edited copy below the Jaccard threshold is not a near duplicate: bench_text_dedup scores
    recall and precision against exact Jaccard)."""
    import pyarrow.parquet as pq

    ledger = pq.read_table(folder / "out" / "dedup.ledger.parquet", columns=["id", "fate", "reason"]).to_pandas()
    merged = ledger[ledger["fate"] == "merged"]
    planted = set(json.loads((folder / "planted_near.json").read_text()))
    near = set(merged.loc[merged["reason"] == "near_duplicate", "id"])
    return {**merged["reason"].value_counts().sort_index().to_dict(), "planted_edited_copies_merged_as_near": len(near & planted)}


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("dedup.parquet", "split"):
        for path in sorted(p for p in (folder / "data" / name).rglob("*.parquet") if p.is_file()):
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def run_one(docs: int, seed: int, kind: str, partition_rows: int) -> dict[str, Any]:
    """One size under one engine, in this (fresh) process."""
    with tempfile.TemporaryDirectory(prefix="bench_engine_scale_", dir=os.environ.get("BENCH_TMP")) as tmp:
        folder = Path(tmp)
        near_rows: list[int] = []
        rows, planted = make_rows(docs, seed, near_rows)
        source = write_corpus(folder, rows)
        _write_planted(folder, near_rows)
        del rows
        with bench_engine(kind, partition_rows) as (engine, workers):
            stages = run_stages(folder, write_params(folder, source, engine), STAGES)
        total = sum(s["seconds"] for s in stages.values())
        return {"docs": docs, "engine": kind, "partition_rows": partition_rows, "planted": planted, "stages": stages,
                "seconds": round(total, 2), "docs_per_s": round(docs / total),
                "peak_rss_mib": max(s["peak_rss_mib"] for s in stages.values()), **workers,
                "merges": merges(folder), "digest": digest(folder)}


def _write_planted(folder: Path, near_rows: list[int]) -> None:
    """The record ids of the planted edited copies (a TSV row's id is made of the file and its line)."""
    from pipeline.records import make_id

    ids = [make_id("corpus.tsv", row + 2) for row in near_rows]  # line 1 is the header
    (folder / "planted_near.json").write_text(json.dumps(ids))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="1000000,5000000", help="comma-separated corpus sizes")
    parser.add_argument("--engine", choices=["local", "dask", "both"], default="local")
    parser.add_argument("--partition-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single", action="store_true", help="run one size and engine in this process")
    args = parser.parse_args(argv)
    sizes = sorted(int(d) for d in args.docs.split(","))
    kinds = ["local", "dask"] if args.engine == "both" else [args.engine]
    if args.single:
        print(json.dumps(run_one(sizes[0], args.seed, kinds[0], args.partition_rows)))
        return 0
    load_before = os.getloadavg()
    runs = [_child(size, args.seed, kind, args.partition_rows) for size in sizes for kind in kinds]
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_before": [round(v, 2) for v in load_before],
                              "load_avg_after": [round(v, 2) for v in os.getloadavg()], "runs": runs}
    report.update(engine_ratios(runs, kinds, "docs"))
    print(json.dumps(report))
    return 0


def _child(docs: int, seed: int, kind: str, partition_rows: int) -> dict[str, Any]:
    return child_json(__file__, ["--single", "--docs", str(docs), "--seed", str(seed), "--engine", kind,
                                 "--partition-rows", str(partition_rows)])


if __name__ == "__main__":
    raise SystemExit(main())
