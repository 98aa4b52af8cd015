"""Where the work runs: in this process, in local worker processes, or on a Dask cluster.

Stages hand the engine pandas-in, pandas-out steps over one partition (`pipeline.steps`); the
engine reads record sets and sources in partitions, runs the steps where `engine` params say, and
writes outputs in the canonical layout, so results never depend on where or in how many pieces
the work ran. Only this package knows Dask.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pipeline.engines.engine import Engine, Partitioned
from pipeline.engines.local import chunk_size_for, map_chunks
from pipeline.engines.session import open_session
from pipeline.io import scratch_folder
from pipeline.params import EngineParams

__all__ = ["Engine", "Partitioned", "chunk_size_for", "map_chunks", "open_engine"]


@contextlib.contextmanager
def open_engine(params: EngineParams, beside: Path, stage: str) -> Iterator[Engine]:
    """The engine of one stage run. Its scratch folder (spill files) is made in `beside`, the folder
    of the stage's outputs, so workers of a cluster that share the workspace see it too; it is
    removed afterwards, and so is any left by an earlier run of the same stage that was killed."""
    with scratch_folder(beside, stage) as scratch, open_session(params, scratch) as session:
        yield Engine(params, session, scratch, stage)
