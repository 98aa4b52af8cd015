"""Quality gates: thresholds on a run's metrics that a CI pipeline can fail on.

Each gate compares one measured value with its threshold from params `gates`; a gate whose
threshold is null is not checked. The report stage shows every gate and fails when one is
violated (unless `gates.warn_only`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.params import GatesParams


@dataclass(frozen=True, slots=True)
class Gate:
    """One checked gate: what, the measured value, the threshold and the verdict."""

    name: str
    value: float
    threshold: float
    passed: bool
    where: str = ""

    def describe(self) -> str:
        sign = "<=" if self.name.startswith("max") else ">="
        where = f" ({self.where})" if self.where else ""
        verdict = "ok" if self.passed else "VIOLATED"
        return f"{self.name}{where}: {self.value:g} (must be {sign} {self.threshold:g}) {verdict}"


def _max(name: str, value: float, threshold: float | None, where: str = "") -> list[Gate]:
    return [] if threshold is None else [Gate(name, round(value, 6), threshold, value <= threshold, where)]


def _min(name: str, value: float, threshold: float | None, where: str = "") -> list[Gate]:
    return [] if threshold is None else [Gate(name, round(value, 6), threshold, value >= threshold, where)]


def evaluate_gates(metrics: dict[str, dict[str, Any]], card: dict[str, Any], leakage: dict[str, Any], params: GatesParams) -> list[Gate]:
    """All configured gates over a dataset's stage metrics, final card and leakage certificate."""
    gates: list[Gate] = []
    if "dedup" in metrics:
        gates += _max("max_duplicate_rate", metrics["dedup"].get("duplicate_rate", 0.0), params.max_duplicate_rate)
    for stage, m in sorted(metrics.items()):
        if not m.get("in"):
            continue
        dropped = m.get("dropped", {})
        gates += _max("max_drop_rate", sum(dropped.values()) / m["in"], params.max_drop_rate, stage)
        worst = max(dropped.items(), key=lambda kv: kv[1], default=None)
        if worst is not None:
            gates += _max("max_drop_rate_per_reason", worst[1] / m["in"], params.max_drop_rate_per_reason, f"{stage}: {worst[0]}")
    for split, classes in sorted(card.get("classes", {}).items()):
        if classes:
            label, fewest = min(classes.items(), key=lambda kv: (kv[1], kv[0]))
            gates += _min("min_records_per_class_per_split", fewest, params.min_records_per_class_per_split, f"{split}: {label}")
    if "evaluate" in metrics and "macro_f1" in metrics["evaluate"]:
        gates += _min("min_test_macro_f1", metrics["evaluate"]["macro_f1"], params.min_test_macro_f1)
    for name, versus in sorted(metrics.get("evaluate", {}).get("baselines", {}).items()):
        margin = versus.get("model_minus_baseline_macro_f1")
        if margin is not None:
            gates += _min("min_margin_over_baselines", margin, params.min_margin_over_baselines, name)
    gates += _max("max_cross_split_leaks", leakage.get("cross_split_pairs", 0), params.max_cross_split_leaks)
    if "semantic" in leakage:
        gates += _max("max_semantic_leaks", leakage["semantic"]["leaks"], params.max_semantic_leaks)
    return gates


def violations(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if not g.passed]
