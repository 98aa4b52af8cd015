"""Data diff between two dataset versions: a git revision and the workspace, or two revisions.

For each dataset and split of the final dataset: records added, removed and changed (same id,
other content or label), class counts before and after, and drop reasons that grew, with example
ids and snippets. Renders Markdown a CI job can post, and checks the gate on how much of test
changed (`gates.max_test_changed_fraction`).
"""
from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DiffError

SPLITS = ("train", "val", "test")
COLUMNS = ["id", "label", "content_hash", "text", "parent_id"]
WORKSPACE = "workspace"


@dataclass(slots=True)
class SplitDiff:
    split: str
    before: int
    after: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    classes_before: dict[str, int] = field(default_factory=dict)
    classes_after: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, id, snippet)

    @property
    def changed_fraction(self) -> float:
        return (len(self.added) + len(self.removed) + len(self.changed)) / max(1, self.before)


@dataclass(slots=True)
class DatasetDiff:
    dataset: str
    splits: list[SplitDiff]
    grown_drops: list[tuple[str, str, int, int]]  # (stage, reason, before, after)
    version_before: str | None
    version_after: str | None


# --- reading a version ----------------------------------------------------------------------

class Version:
    """Files of one version: the workspace, or a git revision read through DVC (cache or remote)."""

    def __init__(self, repo: Path, rev: str):
        self.repo, self.rev = repo, rev
        self._fs = None
        if rev != WORKSPACE:
            from dvc.api import DVCFileSystem

            try:
                self._fs = DVCFileSystem(str(repo), rev=rev)
            except Exception as exc:  # dvc raises scm errors of several types for an unknown revision
                raise DiffError(f"cannot open revision {rev!r}: {exc}") from None

    def records(self, path: str) -> pd.DataFrame:
        """A record set (a folder of shards) with the columns the diff compares."""
        if self._fs is None:
            files = sorted((self.repo / path).glob("part-*.parquet"))
            tables = [pq.read_table(f) for f in files]
        else:
            try:
                files = sorted(p for p in self._fs.find(path) if p.endswith(".parquet"))
                tables = [self._read(p) for p in files]
            except FileNotFoundError:
                files, tables = [], []
        if not tables:
            return pd.DataFrame(columns=COLUMNS)
        table = pa.concat_tables(tables)
        return table.select([c for c in COLUMNS if c in table.column_names]).to_pandas()

    def _read(self, path: str) -> pa.Table:
        try:
            with self._fs.open(path, "rb") as handle:
                return pq.read_table(handle)
        except Exception as exc:  # missing cache objects surface as several dvc error types
            raise DiffError(f"{path} at {self.rev} is not in the DVC cache or a remote: {exc}. "
                            f"Fetch it first: dvc fetch --rev {self.rev} (or dvc pull)") from None

    def json(self, path: str) -> dict[str, Any]:
        if self._fs is None:
            file = self.repo / path
            return json.loads(file.read_text()) if file.exists() else {}
        out = subprocess.run(["git", "show", f"{self.rev}:{path}"], cwd=self.repo, capture_output=True, text=True)
        if out.returncode == 0:
            return json.loads(out.stdout)
        try:
            with self._fs.open(path, "r") as handle:
                return json.load(handle)
        except Exception:  # not in this revision
            return {}


# --- comparing ------------------------------------------------------------------------------

def diff_split(split: str, before: pd.DataFrame, after: pd.DataFrame, examples: int = 3) -> SplitDiff:
    """Added, removed and changed records of one split, with class counts and a few examples."""
    old, new = before.set_index("id"), after.set_index("id")
    added = sorted(set(new.index) - set(old.index))
    removed = sorted(set(old.index) - set(new.index))
    common = sorted(set(old.index) & set(new.index))
    changed = [i for i in common if (old.at[i, "content_hash"], old.at[i, "label"]) != (new.at[i, "content_hash"], new.at[i, "label"])]
    result = SplitDiff(split, len(old), len(new), added, removed, changed,
                       dict(sorted(Counter(before["label"]).items())), dict(sorted(Counter(after["label"]).items())))
    for kind, ids, frame in (("added", added, new), ("removed", removed, old), ("changed", changed, new)):
        for i in ids[:examples]:
            text = frame.at[i, "text"] if "text" in frame.columns else None
            snippet = f"{frame.at[i, 'label']}: {text[:80]}" if isinstance(text, str) else str(frame.at[i, "label"])
            result.examples.append((kind, i, snippet))
    return result


def grown_drops(before: dict[str, dict], after: dict[str, dict]) -> list[tuple[str, str, int, int]]:
    """(stage, reason, before, after) for every drop reason whose count went up."""
    grown = []
    for stage in sorted(after):
        old, new = before.get(stage, {}).get("dropped", {}), after[stage].get("dropped", {})
        grown.extend((stage, reason, old.get(reason, 0), n) for reason, n in sorted(new.items()) if n > old.get(reason, 0))
    return grown


def diff_dataset(name: str, base: Version, target: Version) -> DatasetDiff:
    splits = [diff_split(s, base.records(f"data/{name}/final/{s}.parquet"), target.records(f"data/{name}/final/{s}.parquet"))
              for s in SPLITS]
    stages = ("clean", "normalise", "dedup", "split", "augment", "rebalance")
    metrics = [{s: v.json(f"metrics/{name}/{s}.json") for s in stages} for v in (base, target)]
    cards = [v.json(f"data/{name}/final/card.json") for v in (base, target)]
    return DatasetDiff(name, splits, grown_drops(*metrics), cards[0].get("version"), cards[1].get("version"))


# --- rendering ------------------------------------------------------------------------------

def markdown(diffs: list[DatasetDiff], base: str, target: str, gate: float | None) -> str:
    """The report a CI job posts: one table per dataset, class shifts, grown drop reasons, examples."""
    lines = [f"## Data diff: `{base}` -> `{target}`", ""]
    for d in diffs:
        lines += [f"### {d.dataset}", "", f"version `{(d.version_before or '-')[:12]}` -> `{(d.version_after or '-')[:12]}`", "",
                  "| split | before | after | added | removed | changed | changed share |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {s.split} | {s.before} | {s.after} | {len(s.added)} | {len(s.removed)} | {len(s.changed)} | {s.changed_fraction:.2%} |"
                  for s in d.splits]
        lines += ["", "| split | class | before | after |", "|---|---|---|---|"]
        for s in d.splits:
            for label in sorted(set(s.classes_before) | set(s.classes_after)):
                b, a = s.classes_before.get(label, 0), s.classes_after.get(label, 0)
                if a != b:
                    lines.append(f"| {s.split} | {label} | {b} | {a} |")
        if d.grown_drops:
            lines += ["", "Drop reasons that grew:", ""] + [f"- {st}: `{r}` {b} -> {a}" for st, r, b, a in d.grown_drops]
        examples = [(s.split, *e) for s in d.splits for e in s.examples]
        if examples:
            lines += ["", "Examples:", ""] + [f"- {sp} {kind} `{i}` {snippet}" for sp, kind, i, snippet in examples]
        test = next(s for s in d.splits if s.split == "test")
        if gate is not None:
            verdict = "ok" if test.changed_fraction <= gate else "**VIOLATED**"
            lines += ["", f"Gate max_test_changed_fraction: {test.changed_fraction:.2%} (must be <= {gate:.2%}) {verdict}"]
        lines.append("")
    return "\n".join(lines)


def violated(diffs: list[DatasetDiff], gate: float | None) -> list[str]:
    """Datasets whose test split changed more than the gate allows."""
    if gate is None:
        return []
    return [d.dataset for d in diffs if next(s for s in d.splits if s.split == "test").changed_fraction > gate]
