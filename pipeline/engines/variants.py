"""New variants of a partitioned train set, kept only where they add something: made partition by
partition (`pipeline.steps.augment.make_variants`), then met in a shuffle on the content hash with
every record of equal content in the existing record sets and with each other."""
from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from pipeline.engines.engine import Engine, Partitioned
from pipeline.io import empty_records
from pipeline.params import ImageAugmentParams, TextAugmentParams
from pipeline.steps import augment as steps

VARIANT_ROWS = empty_records().assign(**{steps.VARIANT_FLAG: pd.Series(dtype=bool)})


def new_variants(engine: Engine, train: Partitioned, plan: steps.VariantPlan, params: TextAugmentParams | ImageAugmentParams,
                 *, seed: int, modality: str, existing: list[Path], reason: str, namespace: str) -> tuple[Partitioned, list[Path]]:
    """The variants of `train` that `plan` asks for and that add something (records: none equal to its
    parent, to any record of the `existing` record sets or to another variant), and the fates' spill
    files of all of them."""
    make = functools.partial(steps.make_variants, plan=plan, modality=modality, params=params, seed=seed,
                             reason=reason, namespace=namespace)
    made, made_fates, _ = engine.process(train, make)
    hashes = [engine.read_records(path, modality=modality, columns=["content_hash"]) for path in existing]
    rows = engine.concat([engine.map(part, steps.flag_variants, meta=VARIANT_ROWS, variant=variant, template=VARIANT_ROWS)
                          for part, variant in [(made, True), *((h, False) for h in hashes)]])
    grouped = engine.group(rows, ["content_hash"], order=["content_hash", steps.VARIANT_FLAG, "id"], meta=VARIANT_ROWS)
    kept, kept_fates, _ = engine.process(grouped, steps.new_variants)
    return kept, [*made_fates, *kept_fates]
