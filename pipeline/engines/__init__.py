"""How per-record work runs: in this process, or across worker processes.

Steps are pure functions over chunks of records; an engine only decides where chunks run, and
always returns results in input order, so outputs never depend on the number of workers.
"""
from pipeline.engines.local import chunk_size_for, map_chunks

__all__ = ["chunk_size_for", "map_chunks"]
