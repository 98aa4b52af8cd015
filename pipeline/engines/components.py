"""Connected components of a graph given as edges, each named by its smallest node: what union-find gives.

Two ways, with the same result:

- local: when there are at most `LOCAL_EDGES` edges (16 bytes each: 320 MB at the default), they are
  gathered in this process and joined by `neardup.cluster_labels`, union-find in numpy.
- distributed: alternating large-star and small-star rounds (Kiveris et al., 2014, "Connected
  Components in MapReduce and Beyond"), each a shuffle on a node, as text-dedup's Spark version
  does. Large-star links every larger neighbour of a node to the smallest node it sees;
  small-star links a node and its smaller neighbours to the smallest of them. The rounds stop
  when the edges form stars around their smallest nodes: every child has one parent and no parent
  is a child (an exact test, not the repeated-change-count heuristic). Rounds grow with the log of
  the longest chain; `MAX_ROUNDS` bounds them, and reaching it is an error, not an answer.

Nodes are unsigned 64-bit keys (record ids as numbers); edges are frames with columns `a`, `b`.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.engines.engine import Engine, Partitioned
from pipeline.steps.neardup import cluster_labels

log = logging.getLogger(__name__)
LOCAL_EDGES = 20_000_000
MAX_ROUNDS = 64
EDGES = pa.schema([("x", pa.uint64()), ("y", pa.uint64())])  # x > y: child, parent
LABELS = pa.schema([("key", pa.uint64()), ("root", pa.uint64())])
EMPTY_EDGES = EDGES.empty_table().to_pandas()
EMPTY_LABELS = LABELS.empty_table().to_pandas()
EMPTY_ROLES = pd.DataFrame({"node": np.empty(0, np.uint64), "parent": np.empty(0, np.uint64), "is_parent": np.empty(0, bool)})
VIOLATIONS = pd.DataFrame({"violations": np.empty(0, np.int64)})


def components(engine: Engine, edges: Partitioned, *, local_edges: int | None = None) -> Partitioned:
    """(`key`, `root`) for every node of an edge, `root` the smallest node of its component."""
    limit = LOCAL_EDGES if local_edges is None else local_edges
    if engine.count(edges) <= limit:
        return _local(engine, edges)
    return _distributed(engine, engine.materialize(engine.map(edges, _oriented, meta=EMPTY_EDGES), schema=EDGES))


def _local(engine: Engine, edges: Partitioned) -> Partitioned:
    pairs = engine.collect(edges)
    a, b = pairs["a"].to_numpy(np.uint64), pairs["b"].to_numpy(np.uint64)
    nodes, index = np.unique(np.concatenate((a, b)), return_inverse=True)
    labels = cluster_labels(len(nodes), index.reshape(2, -1).T) if len(nodes) else np.empty(0, np.int64)
    frame = pd.DataFrame({"key": nodes, "root": nodes[labels]})
    return engine.from_frame(frame, LABELS)


def _distributed(engine: Engine, edges: Partitioned) -> Partitioned:
    for round_ in range(1, MAX_ROUNDS + 1):
        both = engine.map(edges, _both_directions, meta=EMPTY_EDGES)
        edges = engine.materialize(engine.group(both, ["x"], _large_star, order=["x", "y"], meta=EMPTY_EDGES), schema=EDGES)
        edges = engine.materialize(engine.group(edges, ["x"], _small_star, order=["x", "y"], meta=EMPTY_EDGES), schema=EDGES)
        roles = engine.map(edges, _roles, meta=EMPTY_ROLES)
        checked = engine.group(roles, ["node"], _violations, order=["node", "parent", "is_parent"], meta=VIOLATIONS)
        remaining = int(engine.collect(checked)["violations"].sum())
        log.debug("components: round %d, %d nodes not yet under their root", round_, remaining)
        if remaining == 0:
            labels = engine.map(edges, _with_roots, meta=EMPTY_LABELS)
            deduped = engine.group(labels, ["key"], _unique_labels, order=["key", "root"], meta=EMPTY_LABELS)
            return engine.materialize(deduped, schema=LABELS, key="key")
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def _oriented(pairs: pd.DataFrame) -> pd.DataFrame:
    a, b = pairs["a"].to_numpy(np.uint64), pairs["b"].to_numpy(np.uint64)
    return pd.DataFrame({"x": np.maximum(a, b), "y": np.minimum(a, b)})


def _both_directions(edges: pd.DataFrame) -> pd.DataFrame:
    x, y = edges["x"].to_numpy(np.uint64), edges["y"].to_numpy(np.uint64)
    return pd.DataFrame({"x": np.concatenate((x, y)), "y": np.concatenate((y, x))})


def _neighbourhoods(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row (sorted by node x): the node, its neighbour, and the smallest of the node and its neighbours."""
    x, y = rows["x"].to_numpy(np.uint64), rows["y"].to_numpy(np.uint64)
    if not len(x):
        return x, y, x
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    smallest = np.minimum(np.minimum.reduceat(y, starts), x[starts])
    return x, y, np.repeat(smallest, np.diff(np.append(starts, len(x))))


def _large_star(rows: pd.DataFrame) -> pd.DataFrame:
    """Each larger neighbour of a node linked to the smallest node the node sees."""
    x, y, smallest = _neighbourhoods(rows)
    larger = y > x
    return _edges(y[larger], smallest[larger])


def _small_star(rows: pd.DataFrame) -> pd.DataFrame:
    """A node (rows: its smaller neighbours) and those neighbours, each linked to the smallest of them."""
    x, y, smallest = _neighbourhoods(rows)
    starts = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1]))) if len(x) else np.empty(0, np.int64)
    children = np.concatenate((y, x[starts]))
    parents = np.concatenate((smallest, smallest[starts]))
    keep = children != parents
    return _edges(children[keep], parents[keep])


def _edges(children: np.ndarray, parents: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"x": children.astype(np.uint64), "y": parents.astype(np.uint64)})
    return frame.drop_duplicates(ignore_index=True)


def _roles(edges: pd.DataFrame) -> pd.DataFrame:
    """Each edge seen from both ends: the child with its parent, and the parent (`is_parent`)."""
    x, y = edges["x"].to_numpy(np.uint64), edges["y"].to_numpy(np.uint64)
    return pd.DataFrame({"node": np.concatenate((x, y)), "parent": np.concatenate((y, np.zeros(len(y), np.uint64))),
                         "is_parent": np.concatenate((np.zeros(len(x), bool), np.ones(len(y), bool)))})


def _violations(rows: pd.DataFrame) -> pd.DataFrame:
    """How many nodes have two parents, or a parent and a child: while any do, the edges are not stars."""
    frame = rows.drop_duplicates()
    child = frame[~frame["is_parent"]]
    parents_per_child = child.groupby("node").size()
    both = np.intersect1d(child["node"].to_numpy(np.uint64), frame.loc[frame["is_parent"], "node"].to_numpy(np.uint64))
    return pd.DataFrame({"violations": [int((parents_per_child > 1).sum()) + len(both)]})


def _with_roots(edges: pd.DataFrame) -> pd.DataFrame:
    x, y = edges["x"].to_numpy(np.uint64), edges["y"].to_numpy(np.uint64)
    return pd.DataFrame({"key": np.concatenate((x, y)), "root": np.concatenate((y, y))})


def _unique_labels(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop_duplicates("key", ignore_index=True)
