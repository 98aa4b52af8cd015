"""The first k records of each class in the seed's order, found on the partitions without gathering
the class (`pipeline.steps.order`): bucket counts summed over partitions, then the one bucket of
each class that holds its k-th record read back alone."""
from __future__ import annotations

from collections.abc import Mapping

from pipeline.engines.engine import Engine, Partitioned
from pipeline.steps import order


def first_cutoffs(engine: Engine, records: Partitioned, wanted: Mapping[str, int], *, seed: int,
                  namespace: str) -> dict[str, order.Cutoff]:
    """Per class of `wanted`, the (order, id) of its `wanted[label]`-th record in the seed's order of
    `namespace`; classes that want none get no cutoff."""
    wanted = {label: k for label, k in sorted(wanted.items()) if k > 0}
    if not wanted:
        return {}
    counted = engine.map(records, order.bucket_counts, meta=order.BUCKET_COUNTS, labels=frozenset(wanted),
                         seed=seed, namespace=namespace)
    ranks = order.rank_buckets(engine.totals(counted, ["label", "bucket"], "n"), wanted)
    buckets = {label: bucket for label, (bucket, _) in ranks.items()}
    rows = engine.collect(engine.map(records, order.in_buckets, meta=order.ORDERED, buckets=buckets,
                                     seed=seed, namespace=namespace))
    return order.cutoffs_in(rows, ranks)
