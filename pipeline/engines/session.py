"""Where a stage's tasks run: this process, local worker processes, or a Dask cluster.

`open_session` yields a `Session` for the configured `engine` params and closes what it started.

- `kind: local`, `workers: 1` (the default): Dask's synchronous scheduler, in this process, with
  no server.
- `kind: local`, `workers: N`: Dask's multiprocessing scheduler over a pool of N processes on this
  machine, still with no server.
- `kind: dask`: the cluster at `dask.scheduler_address`, or a LocalCluster of `dask.workers`
  processes with `dask.threads_per_worker` threads and `dask.memory_limit` each.

Whatever runs the tasks, outputs are the same bytes: the engine makes every order canonical. Its
shuffles are its own tasks exchanging spill files in the scratch folder (`Engine._exchange`), the
same under every scheduler, so memory stays bounded by the partition.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask

from pipeline.errors import StageError
from pipeline.params import EngineParams

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = "10s"  # a scheduler that does not answer fails the stage this fast


@dataclass(slots=True, frozen=True)
class Session:
    """The scheduler in use (`client` is None for the in-process one) and a description for the metrics."""

    client: Any
    description: str

    @property
    def distributed(self) -> bool:
        return self.client is not None


@contextlib.contextmanager
def open_session(params: EngineParams, scratch: Path) -> Iterator[Session]:
    """The scheduler for `params`, with Dask configured for canonical results and bounded memory."""
    settings = {
        "optimization.tune.active": False,  # else read_parquet may fuse partitions behind our back
        "temporary_directory": str(scratch),
        "dataframe.convert-string": False,  # keep pandas' object strings: steps see what they always saw
    }
    if params.kind == "local":
        local = settings
        if params.workers == 1:
            with dask.config.set({**local, "scheduler": "synchronous"}):
                yield Session(None, "local, in process")
            return
        with ProcessPoolExecutor(max_workers=params.workers) as pool, dask.config.set({**local, "scheduler": "processes", "pool": pool}):
            yield Session(None, f"local, {params.workers} processes")
        return
    with _client(params, scratch) as (client, description), dask.config.set(settings):
        yield Session(client, description)


@contextlib.contextmanager
def _client(params: EngineParams, scratch: Path) -> Iterator[tuple[Any, str]]:
    from distributed import Client, LocalCluster

    address = params.dask.scheduler_address
    if address:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=True)
        except (OSError, TimeoutError) as exc:
            raise StageError(f"cannot reach the Dask scheduler at {address} (engine.dask.scheduler_address) "
                             f"within {CONNECT_TIMEOUT}: {exc}") from None
        with client:
            log.info("engine: Dask cluster at %s (dashboard %s)", address, client.dashboard_link)
            yield client, f"dask, scheduler {address}"
        return
    shape = params.dask
    cluster = LocalCluster(n_workers=shape.workers, threads_per_worker=shape.threads_per_worker, processes=True,
                           memory_limit=shape.memory_limit, dashboard_address=":0", local_directory=str(scratch),
                           silence_logs=logging.WARNING)
    with cluster, Client(cluster, set_as_default=True) as client:
        log.info("engine: LocalCluster of %d worker process(es), dashboard %s", shape.workers, client.dashboard_link)
        yield client, f"dask, LocalCluster of {shape.workers} worker process(es)"
