"""Semantic neighbours: pairs of records whose embeddings' cosine reaches a threshold, and what
they do to the record set (join their groups, or merge as near duplicates do).

The search is exact: every pair is scored, a block of rows against every later row, first in
float32 (keeping what comes within `MARGIN` below the threshold), then each candidate again in
float64, rounded to 4 places and compared so rounded, as the leakage certificate's semantic
section does. So the pairs never depend on a CPU's float32 kernels, and the file and the decision
agree. Its cost is quadratic: about n^2 / 2 x dimensions multiply-adds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.steps.vectors import unit_rows

ROWS, COLUMNS = 1_024, 16_384  # a block of cosines is at most 64 MB of float32
MARGIN = 1e-3  # float32 cosines of unit vectors are off by far less than this
NEIGHBOUR = "semantic_neighbour"


def neighbour_pairs(ids: np.ndarray, vectors: np.ndarray, threshold: float) -> pd.DataFrame:
    """Every pair of records (`a` < `b`, ids) whose cosine reaches `threshold`, with the `cosine`
    (float64, rounded to 4 places); sorted by a, then b."""
    order = np.argsort(ids, kind="stable")
    ids, unit = np.asarray(ids, dtype=object)[order], unit_rows(vectors)[order]
    first, second = _candidates(unit.astype(np.float32), threshold - MARGIN)
    cosine = np.round(np.einsum("ij,ij->i", unit[first], unit[second]), 4)
    close = cosine >= threshold
    return pd.DataFrame({"a": ids[first[close]], "b": ids[second[close]], "cosine": cosine[close]})


def _candidates(unit: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs i < j whose float32 cosine reaches `floor`, in row order."""
    found_i, found_j = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    n = len(unit)
    for start in range(0, n, ROWS):
        block = unit[start:start + ROWS]
        for column in range(start, n, COLUMNS):
            i, j = np.nonzero(block @ unit[column:column + COLUMNS].T >= floor)
            i, j = i + start, j + column
            found_i.append(i[j > i])
            found_j.append(j[j > i])
    first, second = np.concatenate(found_i), np.concatenate(found_j)
    order = np.lexsort((second, first))
    return first[order], second[order]


def closest(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per record in a pair, its closest partner: `id`, `other`, `cosine` (ties: the smaller other id); by id."""
    both = pd.DataFrame({"id": np.concatenate([pairs["a"], pairs["b"]]).astype(object),
                         "other": np.concatenate([pairs["b"], pairs["a"]]).astype(object),
                         "cosine": np.concatenate([pairs["cosine"], pairs["cosine"]])})
    both = both.sort_values(["id", "cosine", "other"], ascending=[True, False, True], kind="stable")
    return both.drop_duplicates("id").reset_index(drop=True)


def detail(cosine: float, other: str) -> str:
    return f"cosine {cosine:.4f} with {other}"


def components(nodes: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per node (sorted, distinct), the first node of its connected component over edges a-b."""
    index = {node: k for k, node in enumerate(nodes)}
    rows, cols = [index[x] for x in a], [index[x] for x in b]
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(nodes), len(nodes)))
    _, label = connected_components(graph, directed=False)
    first = pd.Series(np.arange(len(nodes))).groupby(label).transform("min").to_numpy()
    return np.asarray(nodes, dtype=object)[first]


def joined_groups(records: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The records (`id`, `group_id`) whose group joins another through a pair: `id` and the new
    `group_id`, the smallest group id of the joined groups; by id."""
    if pairs.empty:
        return pd.DataFrame({"id": pd.Series(dtype=object), "group_id": pd.Series(dtype=object)})
    group = dict(zip(records["id"], records["group_id"], strict=True))
    a, b = (np.array([group[x] for x in pairs[end]], dtype=object) for end in ("a", "b"))
    nodes = np.array(sorted(set(a) | set(b)), dtype=object)
    joined = dict(zip(nodes, components(nodes, a, b), strict=True))
    new = records["group_id"].map(joined)
    moved = new.notna() & (new != records["group_id"])
    return pd.DataFrame({"id": records.loc[moved, "id"].to_numpy(object), "group_id": new[moved].to_numpy(object)}) \
        .sort_values("id", kind="stable").reset_index(drop=True)


def clusters(pairs: pd.DataFrame) -> pd.DataFrame:
    """The records of the pairs with their `cluster` (the smallest id of their connected component); by id."""
    nodes = np.array(sorted(set(pairs["a"]) | set(pairs["b"])), dtype=object)
    return pd.DataFrame({"id": nodes, "cluster": components(nodes, pairs["a"].to_numpy(object), pairs["b"].to_numpy(object))})


def surviving_pairs(pairs: pd.DataFrame, into: dict[str, str], gone: set[str]) -> pd.DataFrame:
    """The pairs seen from the records that survive a merge: each end replaced by its survivor
    (`into`), pairs with a removed end (`gone`) or one survivor at both ends left out; by a, b."""
    a = pairs["a"].map(lambda x: into.get(x, x))
    b = pairs["b"].map(lambda x: into.get(x, x))
    keep = ~a.isin(gone) & ~b.isin(gone) & (a != b)
    low, high = np.where(a < b, a, b)[keep], np.where(a < b, b, a)[keep]
    moved = pd.DataFrame({"a": low, "b": high, "cosine": pairs["cosine"].to_numpy()[keep]})
    moved = moved.sort_values(["a", "b", "cosine"], ascending=[True, True, False], kind="stable")
    return moved.drop_duplicates(["a", "b"]).reset_index(drop=True)
