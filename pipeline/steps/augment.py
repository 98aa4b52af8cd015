"""Augment: new variants of train records, texts with nlpaug and images with albumentations.

Each variant's randomness comes from a generator keyed on (seed, record id, variant index), so a
variant is the same whatever order, batch or worker produced it. Every variant names its parent
and the exact operations applied (for images, with the parameters albumentations sampled).
"""
from __future__ import annotations

import functools
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.errors import AugmenterUnavailable
from pipeline.ledger import Fates, Processed
from pipeline.params import ImageAugmentParams, TextAugmenter, TextAugmentParams
from pipeline.records import make_id, op_json, pixel_hash, text_hash
from pipeline.seeding import derive_seed, seed_globals
from pipeline.steps import order


VARIANT_FLAG = "variant"  # in the content-hash shuffle: a variant (True) or an existing record (False)


@dataclass(slots=True)
class Variant:
    """One generated record's new content and provenance."""

    id: str
    parent_id: str
    content_hash: str
    op: str
    text: str | None = None
    image: bytes | None = None


@dataclass(frozen=True, slots=True)
class VariantPlan:
    """How many variants each train record gets, decided from class counts alone.

    Without targets: `variants` for every record of `classes` (None: every class). With targets:
    `base[label]` for every record of a class short of its target, plus one for the records that come
    first in the seed's order (`pipeline.steps.order`, keyed on `ordering` and the id) up to
    `cutoff[label]`, so the extra variants go to the same records whoever reads them in whatever
    partitions. `originals_only`: records that are variants themselves (with a parent) get none.
    """

    variants: int = 0
    classes: frozenset[str] | None = None
    base: dict[str, int] | None = None
    cutoff: dict[str, order.Cutoff] = field(default_factory=dict)
    ordering: str = "augment-order"
    originals_only: bool = False


def shortfalls(class_counts: dict[str, int], targets: dict[str, int] | None,
               spread_over: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """(variants for every record, records that get one more) per class short of its target, the
    missing records spread over `spread_over[label]` records (default: the whole class)."""
    out = {}
    for label, target in sorted((targets or {}).items()):
        size, over = class_counts.get(label, 0), (spread_over or class_counts).get(label, 0)
        if over and target > size:
            out[label] = divmod(target - size, over)
    return out


def extra_variants(short: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Per class of `shortfalls`, how many of its records get one variant more than the rest."""
    return {label: extra for label, (_, extra) in short.items() if extra}


def variant_plan(class_counts: dict[str, int], cutoff: dict[str, order.Cutoff],
                 params: TextAugmentParams | ImageAugmentParams) -> VariantPlan:
    """The augment stage's plan from the class counts and the cutoffs of `extra_variants`."""
    if not params.targets:
        return VariantPlan(params.variants, None if params.classes is None else frozenset(params.classes))
    short = shortfalls(class_counts, params.targets)
    return VariantPlan(base={label: base for label, (base, _) in short.items()}, cutoff=cutoff)


def partition_counts(records: pd.DataFrame, plan: VariantPlan, seed: int) -> pd.Series:
    """Variants to make per record of one partition (indexed like it)."""
    if plan.base is None:
        eligible = records["label"].isin(plan.classes) if plan.classes is not None else pd.Series(True, index=records.index)
        return eligible.astype(int) * plan.variants
    counts = records["label"].map(plan.base).fillna(0).astype(int)
    counts[order.first(records, plan.cutoff, seed, plan.ordering)] += 1
    if plan.originals_only:
        counts[records["parent_id"].notna().to_numpy()] = 0
    return counts


def variant_counts(train: pd.DataFrame, params: TextAugmentParams | ImageAugmentParams, seed: int) -> pd.Series:
    """Variants to make per train record (indexed like `train`), for a set held whole: the plan of
    `variant_plan` (targets: each listed class gets enough variants to reach its target, spread as
    evenly as possible over its records, the extra ones to records first in the seed's order)."""
    class_counts = {str(k): int(v) for k, v in train["label"].value_counts().items()}
    extras = extra_variants(shortfalls(class_counts, params.targets))
    plan = variant_plan(class_counts, order.cutoffs(train, extras, seed, "augment-order"), params)
    return partition_counts(train, plan, seed)


def variant_id(parent_id: str, variant: int, namespace: str = "augment") -> str:
    """Stable id of the `variant`-th augmented copy of `parent_id` made by `namespace` (a stage)."""
    return make_id(parent_id, namespace, variant)


# --- text -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _text_augmenters(spec: str) -> list[Any]:
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw

    built = []
    for item in json.loads(spec):
        module = nac if item["name"] in ("KeyboardAug", "OcrAug", "RandomCharAug") else naw
        built.append(getattr(module, item["name"])(**item["args"]))
    return built


def check_augmenters(augmenters: Sequence[TextAugmenter]) -> None:
    """Fail early, with instructions, when an augmenter's data is not installed (SynonymAug: WordNet)."""
    if not any(a.name == "SynonymAug" for a in augmenters):
        return
    try:
        import nltk

        nltk.data.find("corpora/wordnet")
    except (ImportError, LookupError):
        raise AugmenterUnavailable(
            "SynonymAug needs nltk and its WordNet data, which are not installed here. Install them "
            "(pip install nltk; then Debian's wordnet-base, or nltk.download('wordnet') where a network "
            "is available), or remove SynonymAug from params augment.text.augmenters", key="augment.text.augmenters"
        ) from None


def check_available(modality: str, params: TextAugmentParams | ImageAugmentParams) -> None:
    """Raise AugmenterUnavailable, saying why, when the configured augmentation cannot run."""
    if modality == "text":
        check_augmenters(params.augmenters)
        for i, augmenter in enumerate(params.augmenters):
            try:
                _text_augmenters(augmenter_spec([augmenter]))
            except (TypeError, ValueError) as exc:  # an argument nlpaug does not take
                raise AugmenterUnavailable(f"nlpaug cannot make {augmenter.name}: {exc}", key=f"augment.text.augmenters.{i}.args") from None
        return
    problem = transform_problem(params.transform["transform"])
    if problem:
        raise AugmenterUnavailable(problem[1], key=f"augment.image.transform.{problem[0]}")


def transform_problem(node: dict[str, Any], where: str = "transform") -> tuple[str, str] | None:
    """(where, why) for the first transform of an A.to_dict() tree, its children before it, that
    albumentations cannot build: an unknown name, an argument it refuses or does not know."""
    import albumentations as A

    for i, child in enumerate(node.get("transforms", [])):
        if problem := transform_problem(child, f"{where}.transforms.{i}"):
            return problem
    name = node["__class_fullname__"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            A.from_dict({"transform": node})
    except KeyError:
        return f"{where}.__class_fullname__", f"unknown albumentations transform {name!r}"
    except Exception as exc:  # albumentations raises many types for a bad argument
        return where, f"albumentations cannot make {name}: {_one_line(str(exc))}"
    unknown = [str(w.message) for w in caught if "not valid for transform" in str(w.message)]
    return (where, f"{name}: {unknown[0]}") if unknown else None


def _one_line(message: str) -> str:
    """A (pydantic) message of several lines as one, without its links."""
    return " ".join(line.strip() for line in message.splitlines() if not line.strip().startswith("For further information"))


def augmenter_spec(augmenters: Sequence[TextAugmenter]) -> str:
    """Canonical JSON of an augmenter list (the cache key and the recorded operation)."""
    return json.dumps([a.model_dump() for a in augmenters], sort_keys=True)


def augment_text(text: str, record_id: str, variant: int, *, spec: str, seed: int, namespace: str = "augment") -> str:
    """Apply every augmenter in order, with global RNGs seeded for this record and variant."""
    return _apply(_text_augmenters(spec), text, seed, namespace, record_id, variant)


def _apply(augmenters: Sequence[Any], text: str, seed: int, *keys: object) -> str:
    seed_globals(seed, *keys)
    for augmenter in augmenters:
        result = augmenter.augment(text)
        text = result[0] if isinstance(result, list) else result
    return text


def augment_texts(items: Sequence[tuple], params: TextAugmentParams, seed: int, namespace: str = "augment") -> list[Variant]:
    """All variants of a chunk of (id, text[, variant count]) records (count defaults to params.variants).

    The augmenters and each variant index's operation JSON are made once per chunk: per text,
    only the seeding, the augmenters themselves, the id and the hash remain.
    """
    spec = augmenter_spec(params.augmenters)
    augmenters = _text_augmenters(spec)
    op = {"op": "augment", "augmenters": json.loads(spec)}
    ops: dict[int, str] = {}
    out = []
    for record_id, text, *count in items:
        for v in range(count[0] if count else params.variants):
            new = _apply(augmenters, text, seed, namespace, record_id, v)
            if v not in ops:
                ops[v] = op_json({**op, "variant": v})
            out.append(Variant(variant_id(record_id, v, namespace), record_id, text_hash(new), ops[v], text=new))
    return out


# --- images ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _compose(spec: str) -> Any:
    import albumentations as A

    compose = A.from_dict(json.loads(spec))
    compose.save_applied_params = True
    return compose


def transform_spec(transform: dict[str, Any]) -> str:
    """Canonical JSON of an albumentations dict, checked to load."""
    spec = json.dumps(transform, sort_keys=True)
    _compose(spec)
    return spec


def seed_transforms(transform: Any, seed: int, *keys: object) -> None:
    """Give every transform in the tree its own seed derived from (seed, keys, position).

    albumentations' Compose.set_random_seed hands one seed to every child, so their first draws
    (whether each applies, and their parameters) would be identical and perfectly correlated.
    """
    transform.set_random_seed(derive_seed(seed, *keys, bits=32))
    for index, child in enumerate(getattr(transform, "transforms", [])):
        seed_transforms(child, seed, *keys, index)


def augment_image(data: bytes, record_id: str, variant: int, *, spec: str, seed: int, namespace: str = "augment") -> tuple[np.ndarray, list]:
    """Pixels of one variant and the transforms applied with their sampled parameters."""
    compose = _compose(spec)
    seed_transforms(compose, seed, namespace, record_id, variant)
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB"))
    result = compose(image=pixels)
    return result["image"], [[name, _plain(p)] for name, p in result.get("applied_transforms", [])]


def augment_images(items: Sequence[tuple], params: ImageAugmentParams, seed: int, namespace: str = "augment") -> list[Variant]:
    """All variants of a chunk of (id, image bytes[, variant count]) records, encoded as PNG."""
    spec = transform_spec(params.transform)
    out = []
    for record_id, data, *count in items:
        for v in range(count[0] if count else params.variants):
            pixels, applied = augment_image(data, record_id, v, spec=spec, seed=seed, namespace=namespace)
            image = Image.fromarray(pixels)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=6)
            op = op_json({"op": "augment", "variant": v, "applied": applied})
            digest = pixel_hash("RGB", image.size, image.tobytes())
            out.append(Variant(variant_id(record_id, v, namespace), record_id, digest, op, image=buffer.getvalue()))
    return out


def _plain(value: Any) -> Any:
    """JSON-friendly copy of albumentations' sampled parameters (arrays to rounded lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k not in ("shape",)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    return value if isinstance(value, (str, int, bool)) or value is None else str(value)


# --- records --------------------------------------------------------------------------------

PARENT_COLUMNS = ["label", "source", "source_row", "source_split", "group_id", "width", "height", "metadata"]


def generate_variants(train: pd.DataFrame, counts: pd.Series, modality: str, params: TextAugmentParams | ImageAugmentParams,
                      seed: int, *, namespace: str = "augment") -> pd.DataFrame:
    """Records for `counts` variants of each train record, carrying the parent's label, group and source."""
    column = "text" if modality == "text" else "image"
    step = augment_texts if modality == "text" else augment_images
    eligible = train[counts > 0]
    items = list(zip(eligible["id"], eligible[column], counts[counts > 0]))
    made = step(items, params, seed, namespace=namespace)
    generated = pd.DataFrame({
        "id": [v.id for v in made], "parent_id": [v.parent_id for v in made], "content_hash": [v.content_hash for v in made],
        "op": [v.op for v in made], column: [getattr(v, column) for v in made],
    })
    parents = train.set_index("id").loc[generated["parent_id"], PARENT_COLUMNS]
    return pd.concat([generated, parents.reset_index(drop=True)], axis=1)


def same_as_parents(variants: pd.DataFrame, parents: pd.DataFrame) -> np.ndarray:
    """Whether each variant's content equals its parent's (`parents` holds every parent)."""
    parent_hash = parents.set_index("id")["content_hash"]
    return variants["content_hash"].to_numpy() == parent_hash.loc[variants["parent_id"]].to_numpy()


def redundant_variants(rows: pd.DataFrame) -> pd.DataFrame:
    """(id, reason) of the variants among `rows` that repeat something, where `rows` hold every row of
    each content hash they hold, sorted by (content_hash, variant, id): existing records
    (`variant` False) and variants. A variant equal to an existing record is `identical_to_existing`;
    one equal to an earlier variant, `duplicate_variant`."""
    variant = rows[VARIANT_FLAG].to_numpy(bool)
    existing = set(rows.loc[~variant, "content_hash"])
    made = rows[variant]
    exists = made["content_hash"].isin(existing).to_numpy()
    repeat = made["content_hash"].duplicated().to_numpy()
    drop = exists | repeat
    reasons = np.where(exists, "identical_to_existing", "duplicate_variant")[drop]
    return pd.DataFrame({"id": made["id"].to_numpy(object)[drop], "reason": reasons.astype(object)})


# --- partition steps (the augment stage on the engine) --------------------------------------


def make_variants(train: pd.DataFrame, *, plan: VariantPlan, modality: str, params: TextAugmentParams | ImageAugmentParams,
                  seed: int, reason: str, namespace: str = "augment") -> Processed:
    """One partition of train: the variants its plan asks for, each recorded as generated; those
    equal to their parent are dropped at once, the others passed on to `new_variants`."""
    variants = generate_variants(train, partition_counts(train, plan, seed), modality, params, seed, namespace=namespace)
    same = same_as_parents(variants, train)
    fates = Fates.generated(variants["id"], variants["parent_id"], reason) + Fates.dropped(variants.loc[same, "id"], "identical_to_parent")
    return Processed(variants.loc[~same].reset_index(drop=True), fates)


def flag_variants(records: pd.DataFrame, *, variant: bool, template: pd.DataFrame) -> pd.DataFrame:
    """Rows for the content-hash shuffle, in `template`'s columns: variants whole, existing records
    as their hash alone."""
    if variant:
        return records.assign(**{VARIANT_FLAG: True})
    rows = template.reindex(range(len(records)))
    return rows.assign(content_hash=records["content_hash"].to_numpy(object), id="", **{VARIANT_FLAG: False})


def new_variants(rows: pd.DataFrame) -> Processed:
    """One partition of the content-hash shuffle (every row of each hash it holds, sorted by
    content_hash, variant, id): the variants that add something, and the others dropped with why."""
    verdicts = redundant_variants(rows)
    made = rows[rows[VARIANT_FLAG].to_numpy(bool)]
    kept = made[~made["id"].isin(verdicts["id"])].drop(columns=VARIANT_FLAG).reset_index(drop=True)
    return Processed(kept, Fates.dropped(verdicts["id"], verdicts["reason"]))

