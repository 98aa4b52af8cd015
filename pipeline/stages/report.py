"""Report: one self-contained HTML page per dataset, and the quality gates a CI run fails on.

Reads the stage metrics, ledgers, record sets, card, leakage certificate, augmentation preview,
embeddings, label issues and (with metadata columns) prepare's fitted statistics and feature
selection scores of a dataset; writes the page (charts and thumbnails embedded, nothing fetched
when it opens); then fails, listing every violated gate with its value and threshold, unless
`gates.warn_only`.
The stages' wall-clock timings are not read, so the page is the same on every run.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipeline.errors import StageError
from pipeline.io import read_features, read_records, write_bytes
from pipeline.report.gates import evaluate_gates, violations
from pipeline.report.metadata import MetadataInputs
from pipeline.report.page import Example, ReportInputs, render
from pipeline.report.projection import Projection, drawn, projection
from pipeline.stages.base import Context, Outcome, entry, stage_main
from pipeline.steps.metadata import from_json

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
MIN_PROJECTED = 3  # embedded records a projection needs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="the dataset's data folder (data/<dataset>)")
    parser.add_argument("--stage-metrics", required=True, type=Path, help="folder of the dataset's stage metrics")
    parser.add_argument("--output", required=True, type=Path, help="HTML file to write")


def run(ctx: Context) -> Outcome:
    data, metrics = ctx.args.data, _stage_metrics(ctx.args.stage_metrics)
    card = json.loads((data / "final" / "card.json").read_text())
    leakage = json.loads((data / "final" / "leakage.json").read_text())
    gates = evaluate_gates(metrics, card, leakage, ctx.params.gates)
    inputs = ReportInputs(
        dataset=ctx.name, modality=ctx.dataset.modality, card=card, leakage=leakage, metrics=metrics, gates=gates,
        class_phases=_class_phases(metrics, card), **_examples(data, ctx.params.report.examples), **_preview(data),
        projection=_projection(data, leakage), metadata=_metadata(data, bool(ctx.dataset.metadata)),
    )
    write_bytes(render(inputs).encode("utf-8"), ctx.args.output)
    failed = violations(gates)
    for gate in failed:
        log.warning("gate %s", gate.describe())
    if failed and not ctx.params.gates.warn_only:
        raise StageError("quality gates violated:\n  " + "\n  ".join(g.describe() for g in failed)
                         + f"\n(report written to {ctx.args.output}; set gates.warn_only to report without failing)")
    total = sum(card.get("records", {}).values())
    extra = {"gates": {"checked": len(gates), "violated": len(failed)}, "gate_results": [g.describe() for g in gates]}
    return Outcome(total, total, extra)


def _stage_metrics(folder: Path) -> dict[str, dict[str, Any]]:
    """Every stage's metrics but this stage's own (their wall-clock timings, in a subfolder, are not read)."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json")) if path.stem != "report"}


def _class_phases(metrics: dict[str, dict[str, Any]], card: dict[str, Any]) -> dict[str, dict[str, int]]:
    phases = {"ingest (clean)": metrics.get("clean", {}).get("labels", {}), "after dedup": metrics.get("dedup", {}).get("labels", {})}
    reviewed = metrics.get("label_issues", {}).get("labels", {})
    if reviewed and reviewed != phases["after dedup"]:  # semantic merges, or label issues dropped or relabelled
        phases["after label review"] = reviewed
    per_class = metrics.get("split", {}).get("per_class", {})
    for split in SPLITS:
        phases[split] = {label: v.get(split, 0) for label, v in per_class.items()}
    phases["train after rebalance"] = card.get("classes", {}).get("train", {})
    return {k: v for k, v in phases.items() if v}


def _examples(data: Path, limit: int) -> dict[str, list]:
    """Duplicate pairs, label conflicts and flagged records, with their content."""
    dedup_ledger = _ledger(data / "ledger" / "dedup.parquet")
    stage_ledgers = pd.concat([_ledger(data / "ledger" / f"{stage}.parquet") for stage in ("clean", "normalise", "label_issues")])
    neighbours = _neighbour_rows(_ledger(data / "ledger" / "semantic.parquet"), limit)
    merged = dedup_ledger[dedup_ledger["fate"] == "merged"]
    duplicates = pd.concat([rows.head(limit) for _, rows in merged[merged["reason"] != "label_conflict_minority"].groupby("reason")]) \
        if len(merged) else merged
    conflicts = merged[merged["reason"] == "label_conflict_minority"].head(limit)
    reviewed = (stage_ledgers["fate"] == "flagged") | (stage_ledgers["reason"] == "label_issue")  # policy drop: dropped
    flagged = _flag_examples(stage_ledgers[reviewed], data / "label_issues.parquet", limit)
    contaminating = dedup_ledger[dedup_ledger["reason"].astype(str).str.startswith("contaminates:")].head(limit)
    wanted = set(duplicates["id"]) | set(duplicates["into"]) | set(conflicts["id"]) | set(conflicts["into"])
    wanted |= set(neighbours["id"]) | set(neighbours["into"])
    records = _records(data / "normalise.parquet", wanted | set(flagged["id"]) | set(contaminating["id"]))
    return {
        "duplicates": [(r.reason, _text(r.detail), records[r.id], records[r.into]) for r in duplicates.itertuples() if r.id in records and r.into in records],
        "conflicts": [(r.reason, records[r.id], records[r.into]) for r in conflicts.itertuples() if r.id in records and r.into in records],
        "neighbours": [(r.reason, _text(r.detail), records[r.id], records[r.into]) for r in neighbours.itertuples()
                       if r.id in records and r.into in records],
        "flagged": [(r.reason, _text(r.detail), records[r.id]) for r in flagged.itertuples() if r.id in records],
        "contaminating": [(r.reason, _text(r.detail), records[r.id]) for r in contaminating.itertuples() if r.id in records],
    }


def _neighbour_rows(ledger: pd.DataFrame, limit: int) -> pd.DataFrame:
    """`limit` semantic pairs from the semantic stage's ledger, merges first: `reason`, `detail`,
    `id` and `into` (the survivor, or the closest neighbour named in the detail), each pair once."""
    rows = ledger[ledger["reason"].isin(["semantic_duplicate", "semantic_neighbour"])].copy()
    partner = rows["detail"].astype(str).str.rsplit(" with ", n=1).str[-1]
    rows["into"] = rows["into"].where(rows["fate"] == "merged", partner)
    rows["pair"] = [tuple(sorted((a, b))) for a, b in zip(rows["id"], rows["into"], strict=True)]
    rows = rows.sort_values(["fate", "pair"], ascending=[False, True], kind="stable").drop_duplicates("pair")
    return rows.head(limit)[["reason", "detail", "id", "into"]]


def _flag_examples(flagged: pd.DataFrame, issues: Path, limit: int) -> pd.DataFrame:
    """Two examples per flag, and `limit` label issues, the least likely given labels first."""
    is_issue = flagged["reason"].isin(["label_issue", "relabelled"])
    others = flagged[~is_issue].groupby("reason").head(2).head(limit * 2)
    if not issues.exists():
        return others
    ranks = dict(zip(*(pd.read_parquet(issues, columns=["id", "rank"])[c].tolist() for c in ("id", "rank")), strict=True))
    ranked = flagged[is_issue].assign(_rank=lambda f: [ranks.get(i, len(ranks) + 1) for i in f["id"]])
    ranked = ranked.sort_values(["_rank", "id"], kind="stable").head(limit).drop(columns="_rank")
    return pd.concat([others, ranked], ignore_index=True)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _ledger(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas() if path.exists() else pd.DataFrame(columns=["id", "fate", "reason", "into", "detail"])


def _records(path: Path, ids: set[str]) -> dict[str, Example]:
    if not ids or not path.exists():
        return {}
    frame = read_records(path)
    frame = frame[frame["id"].isin(ids)]
    return {r.id: Example(r.id, r.label, r.text if isinstance(r.text, str) else None, r.image if isinstance(r.image, bytes) else None)
            for r in frame.itertuples()}


def _preview(data: Path) -> dict[str, Any]:
    folder = data / "augment" / "preview"
    png, md = folder / "preview.png", folder / "samples.md"
    return {"preview_png": png.read_bytes() if png.exists() else None, "preview_text": md.read_text() if md.exists() else None}


def _metadata(data: Path, declared: bool) -> MetadataInputs | None:
    """prepare's fitted.json and selection.json, where the dataset declares metadata columns (each may be absent)."""
    if not declared:
        return None
    fitted, selection = data / "metadata" / "fitted.json", data / "metadata" / "selection.json"
    return MetadataInputs(from_json(fitted.read_text()) if fitted.exists() else None,
                          json.loads(selection.read_text()) if selection.exists() else None)


def _projection(data: Path, leakage: dict[str, Any]) -> Projection | str:
    """The 2-D projection of the final splits' embedded records, or why there is none."""
    embeddings = data / "embeddings.parquet"
    if not embeddings.exists():
        return f"No projection: {embeddings.name} was not found (the embed stage has not run for this dataset)."
    records = _embedded_records(data, embeddings)
    if len(records) < MIN_PROJECTED:
        return (f"No projection: {len(records)} record(s) of the final splits have an embedding in {embeddings.name}, "
                f"and a projection needs at least {MIN_PROJECTED}.")
    issues = _issue_ids(data / "label_issues.parquet")
    leaks = [(p["id"], p["other_id"]) for p in (leakage.get("semantic") or {}).get("pairs", [])]
    chosen = records[drawn(records["id"], issues | {key for pair in leaks for key in pair})].reset_index(drop=True)
    return projection(chosen, read_features(embeddings, chosen["id"]), issues=issues, leaks=leaks, total=len(records))


def _embedded_records(data: Path, embeddings: Path) -> pd.DataFrame:
    """id, label and split of each final record with an embedding (generated train records have none)."""
    embedded = set(pq.read_table(embeddings, columns=["id"]).column("id").to_pylist())
    paths = {split: data / "final" / f"{split}.parquet" for split in SPLITS}
    frames = [read_records(path, columns=["id", "label"]).assign(split=split) for split, path in paths.items() if path.exists()]
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "label", "split"])
    return records[records["id"].isin(embedded)].drop_duplicates("id").reset_index(drop=True)


def _issue_ids(path: Path) -> set[str]:
    return set(pd.read_parquet(path, columns=["id"])["id"]) if path.exists() else set()


def main(argv: list[str] | None = None) -> int:
    return stage_main("report", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    entry(__spec__.name, main)

