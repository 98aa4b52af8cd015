"""Charts for the report, drawn with matplotlib and returned as PNG bytes (no timestamps inside).

Figures are made with `matplotlib.figure.Figure` directly, not pyplot, so no backend is chosen
and no global figure state is kept: importing this module changes nothing.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

FLOW = ("in", "generated", "merged", "dropped", "out")
COLOURS = {"in": "#4c72b0", "generated": "#55a868", "merged": "#dd8452", "dropped": "#c44e52", "out": "#8172b3"}


def _axes(width: float, height: float):
    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def record_flow(stages: Sequence[str], counts: Mapping[str, Mapping[str, int]]) -> bytes:
    """Grouped bars per stage: records in, generated, merged, dropped and out."""
    figure, axis = _axes(9, 3.6)
    width = 0.16
    for k, key in enumerate(FLOW):
        values = [counts[s].get(key, 0) for s in stages]
        positions = [i + (k - 2) * width for i in range(len(stages))]
        axis.bar(positions, values, width, label=key, color=COLOURS[key])
    axis.set_xticks(range(len(stages)), stages)
    axis.set_ylabel("records")
    axis.legend(ncol=5, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.18), frameon=False)
    return _png(figure)


def class_distribution(phases: Mapping[str, Mapping[str, int]]) -> bytes:
    """Grouped bars: records per class at each phase (ingest, after dedup, per split, after rebalance)."""
    labels = sorted({label for counts in phases.values() for label in counts})
    figure, axis = _axes(9, 3.6)
    width = 0.8 / max(1, len(phases))
    for k, (phase, counts) in enumerate(phases.items()):
        positions = [i + (k - (len(phases) - 1) / 2) * width for i in range(len(labels))]
        axis.bar(positions, [counts.get(label, 0) for label in labels], width, label=phase)
    axis.set_xticks(range(len(labels)), labels)
    axis.set_ylabel("records")
    axis.legend(fontsize=8, ncol=min(6, len(phases)), loc="upper center", bbox_to_anchor=(0.5, 1.2), frameon=False)
    return _png(figure)


def training_curves(history: Sequence[Mapping[str, float]]) -> bytes:
    """Per-epoch curves: every numeric series in the history except the epoch number."""
    series = sorted({k for row in history for k, v in row.items() if k not in ("epoch", "step") and isinstance(v, (int, float))})
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    figure, axis = _axes(7, 3.4)
    for name in series:
        axis.plot(epochs, [row.get(name) for row in history], marker="o", label=name)
    axis.set_xlabel("epoch")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _png(figure)


def confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """The confusion matrix (rows true, columns predicted) with counts written in the cells."""
    size = max(3.0, 0.7 * len(labels) + 1.5)
    figure, axis = _axes(size, size)
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    return _png(figure)
