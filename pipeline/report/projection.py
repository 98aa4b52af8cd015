"""A 2-D picture of the record embeddings: PCA coordinates that are the same on every machine.

`drawn` picks the records to draw (every marked record, the rest by a hash of the id up to
`CAP`), `project` maps vectors to two coordinates, and `projection` puts the drawn records,
their coordinates and their marks (label issues, semantic leaks) together for the chart.
PCA is fitted on the drawn records only, so the report's cost does not grow with the corpus;
below the cap those are every embedded record of the final splits.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

CAP = 4_000  # records drawn at most, beside the marked ones
PLACES = 4  # coordinates are rounded so that last-bit differences between CPUs do not move a pixel


@dataclass(slots=True)
class Projection:
    """The drawn records in id order, their 2-D coordinates, and what is marked on them."""

    ids: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    xy: np.ndarray  # (records, 2), rounded to PLACES
    variance: tuple[float, float]  # share of the drawn records' variance along each axis
    total: int  # embedded records of the final splits, drawn or not
    issues: np.ndarray  # rows of the drawn label issues
    leaks: list[tuple[int, int | None]]  # (row of a val/test leak, row of its train neighbour if drawn)
    issues_listed: int  # label issues listed, drawn or not
    leaks_listed: int  # semantic leaks listed, drawn or not

    @property
    def capped(self) -> bool:
        return len(self.ids) < self.total


def _id_key(record_id: str) -> int:
    """A stable pseudo-random number for an id: the order the cap draws records in."""
    return int.from_bytes(hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest(), "big")


def drawn(ids: Iterable[str], marked: set[str], cap: int = CAP) -> np.ndarray:
    """A mask of the records to draw: every marked one, and the unmarked ones with the smallest
    `_id_key` until `cap` records in all (at least half of `cap`, so many marks keep their context)."""
    ids = np.asarray(list(ids), dtype=object)
    is_marked = np.fromiter((i in marked for i in ids), dtype=bool, count=len(ids))
    room = max(cap - int(is_marked.sum()), cap // 2)
    others = np.flatnonzero(~is_marked)
    keys = sorted((_id_key(ids[row]), ids[row], row) for row in others)
    keep = is_marked.copy()
    keep[[row for _, _, row in keys[:room]]] = True
    return keep


def project(ids: Sequence[str], vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Each row's first two principal components (rows in the order given) and the share of
    variance of each. Fitted in id order in float64 with the full SVD; each axis points to its
    largest coordinate (the first such in id order) so negated vectors give the same picture."""
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    pca = PCA(n_components=2, svd_solver="full").fit(vectors[order].astype(np.float64))
    xy = np.round(pca.transform(vectors[order].astype(np.float64)), PLACES)
    xy = xy * _canonical_signs(xy) + 0.0  # + 0.0: no -0.0
    placed = np.empty_like(xy)
    placed[order] = xy
    share = np.round(np.nan_to_num(pca.explained_variance_ratio_), PLACES)  # nan: every vector equal
    return placed, (float(share[0]), float(share[1]))


def _canonical_signs(xy: np.ndarray) -> np.ndarray:
    """+1 or -1 per column: the sign of its coordinate of largest magnitude."""
    peak = np.abs(xy).argmax(axis=0)
    signs = np.sign(xy[peak, np.arange(xy.shape[1])])
    return np.where(signs == 0, 1.0, signs)


def projection(records: pd.DataFrame, vectors: np.ndarray, *, issues: set[str], leaks: Sequence[tuple[str, str]],
               total: int) -> Projection:
    """The drawn `records` (columns id, label, split; `vectors` in their order) projected and marked:
    label issues by id, semantic leaks as (val/test id, train neighbour id) pairs."""
    order = np.argsort(records["id"].to_numpy(object), kind="stable")
    ids = records["id"].to_numpy(object)[order]
    xy, variance = project(ids, np.asarray(vectors)[order])
    row = {key: i for i, key in enumerate(ids)}
    issue_rows = np.array(sorted(row[key] for key in issues if key in row), dtype=int)
    leak_rows = [(row[key], row.get(neighbour)) for key, neighbour in sorted(set(leaks)) if key in row]
    return Projection(ids=ids, labels=records["label"].to_numpy(object)[order], splits=records["split"].to_numpy(object)[order],
                      xy=xy, variance=variance, total=total, issues=issue_rows, leaks=leak_rows,
                      issues_listed=len(issues), leaks_listed=len(set(leaks)))
