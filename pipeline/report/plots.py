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


def class_heatmap(phases: Mapping[str, Mapping[str, int]], labels: Sequence[str]) -> bytes:
    """Records per class (rows, in the order given) at each phase (columns), counts in the cells:
    readable where grouped bars are not (tens of classes)."""
    matrix = [[phases[phase].get(label, 0) for phase in phases] for label in labels]
    figure, axis = _axes(min(9.0, 2.5 + 1.1 * len(phases)), 1.2 + 0.2 * len(labels))
    axis.imshow(matrix, cmap="Blues", aspect="auto")
    axis.set_xticks(range(len(phases)), list(phases))
    axis.xaxis.tick_top()
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    _write_counts(axis, matrix, fontsize=6)
    return _png(figure)


def _write_counts(axis, matrix: Sequence[Sequence[int]], fontsize: float = 10) -> None:
    """Each cell's count, white on the darker half of the colour scale."""
    peak = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            axis.text(j, i, str(value), ha="center", va="center", fontsize=fontsize, color="white" if value > peak / 2 else "black")


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


CONFUSION_COUNTS_UP_TO = 20  # classes up to which the counts are written in the cells
CONFUSION_TICKS_UP_TO = 100  # classes up to which every row and column is named


def confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """The confusion matrix (rows true, columns predicted); counts written in the cells while they
    fit, the figure at most 11 inches a side however many classes."""
    size = min(11.0, max(3.0, 0.7 * len(labels) + 1.5))
    figure, axis = _axes(size, size)
    axis.imshow(matrix, cmap="Blues")
    tick_size = 10 if len(labels) <= CONFUSION_COUNTS_UP_TO else 5
    if len(labels) <= CONFUSION_TICKS_UP_TO:
        axis.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) <= CONFUSION_COUNTS_UP_TO else 90,
                        ha="right" if len(labels) <= CONFUSION_COUNTS_UP_TO else "center", fontsize=tick_size)
        axis.set_yticks(range(len(labels)), labels, fontsize=tick_size)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(labels) <= CONFUSION_COUNTS_UP_TO:
        _write_counts(axis, matrix)
    return _png(figure)
