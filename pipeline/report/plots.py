"""Charts for the report, drawn with matplotlib and returned as PNG bytes (no timestamps inside).

Figures are made with `matplotlib.figure.Figure` directly, not pyplot, so no backend is chosen
and no global figure state is kept: importing this module changes nothing.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

if TYPE_CHECKING:
    from pipeline.report.projection import Projection

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


LEGEND_CLASSES_UP_TO = 12  # above it the class panel colours by a colour map and has no legend
SPLIT_COLOURS = {"train": "#9a9a9a", "val": "#e6862a", "test": "#2a6fdb"}


def embedding_projection(projection: Projection) -> bytes:
    """Two panels of the same 2-D projection, coloured by class (left) and by split (right); label
    issues marked with black crosses, semantic leaks with red circles and a line to their train neighbour."""
    figure = Figure(figsize=(12, 5.6))
    by_class, by_split = figure.subplots(1, 2, sharex=True, sharey=True)
    classes = sorted(set(projection.labels))
    size = 14 if len(projection.ids) <= 500 else 6 if len(projection.ids) <= 2_000 else 3
    class_colours = _class_colours(classes)
    by_class.scatter(*projection.xy.T, s=size, c=[class_colours[label] for label in projection.labels], alpha=0.7, linewidths=0)
    by_split.scatter(*projection.xy.T, s=size, c=[SPLIT_COLOURS.get(s, "black") for s in projection.splits], alpha=0.7, linewidths=0)
    class_keys = [(label, class_colours[label]) for label in classes] if len(classes) <= LEGEND_CLASSES_UP_TO else []
    for axis, keys, title in ((by_class, class_keys, "by class"), (by_split, list(SPLIT_COLOURS.items()), "by split")):
        _draw_marks(axis, projection)
        axis.legend(handles=[*_dots(keys), *_mark_keys(projection)], fontsize=7, loc="best", framealpha=0.8)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel(f"PC1 ({100 * projection.variance[0]:.1f}% of variance)")
    by_class.set_ylabel(f"PC2 ({100 * projection.variance[1]:.1f}% of variance)")
    drawn = f"{len(projection.ids):,} of {projection.total:,} records" if projection.capped else f"{projection.total:,} records"
    figure.suptitle(f"PCA of the embeddings: {drawn}", fontsize=11)
    return _png(figure)


def _class_colours(classes: Sequence[str]) -> dict[str, object]:
    """Tableau colours while a legend can name them; past that, spread over a colour map."""
    if len(classes) <= LEGEND_CLASSES_UP_TO:
        palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "Paired"].colors
        return {label: palette[i] for i, label in enumerate(classes)}
    colour_map = matplotlib.colormaps["turbo"]
    return {label: colour_map(i / (len(classes) - 1)) for i, label in enumerate(classes)}


def _draw_marks(axis, projection: Projection) -> None:
    xy = projection.xy
    for leak, neighbour in projection.leaks:
        if neighbour is not None:
            axis.plot(*xy[[leak, neighbour]].T, color="#d62728", linewidth=0.7, zorder=3)
    if projection.leaks:
        rows = [leak for leak, _ in projection.leaks]
        axis.scatter(*xy[rows].T, s=70, facecolors="none", edgecolors="#d62728", linewidths=1.2, zorder=4)
    if len(projection.issues):
        axis.scatter(*xy[projection.issues].T, s=28, marker="x", color="black", linewidths=1.0, zorder=5)


def _dots(keys: Sequence[tuple[str, object]]) -> list[Line2D]:
    """Legend entries for coloured points; `$` escaped so a corpus label is never read as mathtext."""
    return [Line2D([], [], linestyle="none", marker="o", markersize=5, color=colour, label=label[:30].replace("$", r"\$"))
            for label, colour in keys]


def _mark_keys(projection: Projection) -> list[Line2D]:
    keys = []
    if len(projection.issues):
        keys.append(Line2D([], [], linestyle="none", marker="x", color="black", label=f"label issue ({len(projection.issues)})"))
    if projection.leaks:
        keys.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="#d62728",
                           markersize=8, label=f"semantic leak ({len(projection.leaks)})"))
    return keys
