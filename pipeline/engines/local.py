"""Run a chunk function in this process or in a local process pool, keeping input order."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")

CHUNKS_PER_WORKER = 4  # with fewer, the last chunks leave workers idle while one finishes


def chunk_size_for(modality: str, engine_chunk_size: int) -> int:
    """Records per unit of work: an image (a decode, an augmentation) costs tens of times a text
    record, so images go in chunks of `engine.chunk_size // 8` and texts in whole chunks. Smaller
    image chunks keep two workers busy to the end; results never depend on the chunking."""
    return engine_chunk_size if modality == "text" else max(1, engine_chunk_size // 8)


def map_chunks(
    fn: Callable[[Sequence[T]], list[R]],
    items: Sequence[T],
    *,
    workers: int = 1,
    chunk_size: int = 256,
    desc: str | None = None,
) -> list[R]:
    """`fn` over consecutive chunks of `items`, flattened in input order.

    `chunk_size` is the most records per chunk. With several workers, chunks are made smaller
    where needed so that each worker gets at least `CHUNKS_PER_WORKER` of them (steps work
    record by record, so results do not depend on it). `fn` must be a module-level function (or
    a functools.partial of one) when `workers > 1`, since chunks are pickled to the workers.
    """
    size = chunk_size if workers <= 1 else max(1, min(chunk_size, math.ceil(len(items) / (workers * CHUNKS_PER_WORKER))))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    progress = tqdm(total=len(items), desc=desc, unit="rec", disable=None, leave=False)
    results: list[R] = []
    with progress:
        for chunk_result in _run(fn, chunks, workers):
            results.extend(chunk_result)
            progress.update(len(chunk_result))
    return results


def _run(fn: Callable[[Sequence[T]], list[R]], chunks: list[Sequence[T]], workers: int):
    if workers <= 1 or len(chunks) <= 1:
        yield from map(fn, chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(fn, chunks)

