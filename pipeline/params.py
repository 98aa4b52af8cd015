"""Validated parameters: one pydantic model per `params.yaml` section, unknown keys rejected.

`load_params` reads the file and turns any validation error into a `ParamsError` whose message
names the file, the dotted key, what was expected and what was found.
"""
from __future__ import annotations

import codecs
import math
import re
from datetime import datetime
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_core import PydanticCustomError

from pipeline.errors import ParamsError

TEXT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
SOURCE_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                      "dev": "val", "test": "test", "testing": "test"}  # a source's split name -> ours
IMAGE_FORMATS = ("image_folder", "image_manifest")


def _not_boolean(value: Any) -> Any:
    """Refuse true/false as a number (pydantic would read 1 and 0) in a list, tuple or mapping."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_for_number", "Input should be a number, not true or false")
    return value


PositiveInt = Annotated[int, Field(gt=0), BeforeValidator(_not_boolean)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0), BeforeValidator(_not_boolean)]
Byte = Annotated[int, Field(ge=0, le=255), BeforeValidator(_not_boolean)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse true/false where a number goes: pydantic would read them as 1 and 0, so a gate
        set to `false` to turn it off would become a threshold of 0 (inside containers: `_not_boolean`)."""
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if isinstance(value, bool) and _takes_number(annotation):
            unset = " (or null, to leave it unset)" if type(None) in _leaf_types(annotation) else ""
            raise PydanticCustomError("bool_for_number", f"Input should be a number{unset}, not true or false")
        return value


def _takes_number(annotation: Any) -> bool:
    """Whether a field of this annotation takes an int or float and no boolean."""
    leaves = _leaf_types(annotation)
    return (int in leaves or float in leaves) and bool not in leaves


def _leaf_types(annotation: Any) -> list[Any]:
    """The types a (maybe constrained, maybe optional) annotation is made of, unions opened."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaf_types(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return [leaf for arg in get_args(annotation) for leaf in _leaf_types(arg)]
    return [annotation]


# --- datasets -------------------------------------------------------------------------------

def _files_shape(value: Any) -> Any:
    """`files` of a shape it can take, else one line saying which (pydantic would give one per union member)."""
    def patterns(v: Any) -> bool:
        return isinstance(v, str) or (isinstance(v, list) and all(isinstance(p, str) for p in v))

    mapping = isinstance(value, dict) and all(isinstance(k, str) and patterns(v) for k, v in value.items())
    if value is None or patterns(value) or mapping:
        return value
    raise PydanticCustomError("files_shape", "Input should be a file pattern, a list of them, or a mapping split -> pattern(s)")


class Columns(Section):
    """Names of the source columns (tabular formats and image manifests)."""

    text: str = "text"
    label: str = "label"
    path: str = "path"
    split: str | None = None


class LabelIssuesParams(Section):
    """Likely label errors by confident learning on the embeddings of every record after dedup."""

    policy: Literal["flag", "drop", "relabel", "off"] = Field("flag", description=(
        "flag: kept, each listed in the ledger (reason label_issue) and the report; drop: removed with that reason; "
        "relabel: given the suggested label where its out-of-fold probability reaches relabel_confidence (the rest "
        "flagged); off: not searched."))
    relabel_confidence: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.9, description=(
        "relabel: the out-of-fold probability of the suggested label a record needs to take it."))
    folds: Annotated[int, Field(ge=2, le=50)] = Field(5, description="Out-of-fold predictions, folds keyed by group_id.")
    text_ngrams: bool = Field(True, description=(
        "Texts: average the out-of-fold probabilities with those of the same model on TF-IDF character 2-5-grams "
        "(benchmarks/bench_label_issues.py --text-features: on SMS with 5% flipped labels, F1 0.71-0.74 on the embeddings "
        "alone, 0.88-0.90 averaged)."))
    inverse_regularisation: Annotated[float, Field(gt=0)] = Field(1.0, description="C of the logistic regression.")


def _scalar(value: Any) -> Any:
    """A number or a string (or null), refused in one line otherwise (a union would list each member)."""
    if value is None or (isinstance(value, (int, float, str)) and not isinstance(value, bool)):
        return value
    raise PydanticCustomError("scalar", "must be a number or a string, got {value!r}", {"value": value})


Scalar = Annotated[int | float | str | None, BeforeValidator(_scalar)]


def _is_date(value: object, format: str) -> bool:
    try:
        datetime.strptime(str(value), format)
    except ValueError:
        return False
    return True


class MetadataColumn(Section):
    """One extra source column kept beside the text or image, and how it is prepared (fitted on train
    only, after the split; `pipeline.steps.metadata`). The defaults change nothing."""

    type: Literal["numeric", "categorical", "datetime"]
    missing: Literal["drop", "mean", "median", "most_frequent", "constant", "keep"] = Field(
        "keep", description="A record without a value: dropped (missing:<name>), imputed from train, given `fill`, or kept.")
    fill: Scalar = Field(None, description="missing: constant: the value (a number, a category, a date in `format`).")
    missing_indicator: bool = Field(False, description="Add a 0/1 column <name>__missing.")
    outliers: Literal["none", "clip", "winsorise", "drop"] = Field(
        "none", description="Outside the train quantiles: clipped to them, to the nearest train value inside them, or dropped.")
    quantiles: tuple[Fraction, Fraction] = (0.01, 0.99)
    scale: Literal["none", "standard", "minmax", "robust"] = "none"
    max_categories: PositiveInt | None = Field(None, description="Categorical: the most frequent train categories; the rest are 'other'.")
    format: str | None = Field(None, description="Datetime: a strptime format, e.g. '%Y-%m-%d %H:%M:%S'.")

    @model_validator(mode="after")
    def _fits_type(self) -> MetadataColumn:
        numeric = self.type != "categorical"
        if not numeric and (self.outliers != "none" or self.scale != "none" or self.missing in ("mean", "median")):
            raise ValueError("a categorical column takes no outliers, scale, or mean/median fill")
        if numeric and self.max_categories is not None:
            raise ValueError("max_categories is for categorical columns")
        if (self.type == "datetime") != (self.format is not None):
            raise ValueError("format is required for a datetime column, and only there")
        if (self.missing == "constant") != (self.fill is not None):
            raise ValueError("fill goes with missing: constant, and only there")
        if self.missing_indicator and self.missing == "drop":
            raise ValueError("missing_indicator with missing: drop marks nothing (no kept record is missing)")
        if not self.quantiles[0] < self.quantiles[1]:
            raise ValueError(f"quantiles {list(self.quantiles)}: low must be below high")
        return self


class MetadataFilter(Section):
    """Keep only records whose metadata column passes; the rest are dropped by clean (filtered:<column>)."""

    column: str
    min: Scalar = Field(None, description="Numeric: a number; datetime: a date in the column's format.")
    max: Scalar = None
    values: list[str] | None = Field(None, description="Categorical: the categories kept.")

    @model_validator(mode="after")
    def _one_test(self) -> MetadataFilter:
        if self.values is None and self.min is None and self.max is None:
            raise ValueError(f"filter on {self.column!r}: give min, max or values")
        if self.values is not None and (self.min is not None or self.max is not None):
            raise ValueError(f"filter on {self.column!r}: values (categorical) or min/max (numeric, datetime), not both")
        return self


class FeatureSelection(Section):
    """Which prepared metadata features the prepare stage keeps, judged on train alone."""

    min_variance: Annotated[float, Field(ge=0.0)] | None = Field(
        None, description="Keep features whose train variance is above this (0: drop constant ones); null: all.")
    mutual_information_top: PositiveInt | None = Field(
        None, description="Then keep this many with the highest mutual information with the label; null: all.")


class DatasetParams(Section):
    """One corpus: where it is, how to read it, and what its labels are."""

    modality: Literal["text", "image"]
    source: str = Field(description="File (tabular, manifest), folder (image folder, or what `files` are in), relative "
                                    "to the project root; or an fsspec URL (s3://bucket/corpus).")
    files: Annotated[str | list[str] | dict[str, str | list[str]] | None, BeforeValidator(_files_shape)] = Field(
        None, description="Text formats and image manifests: the files of the `source` folder to read, relative to it: a "
                          "glob, a list of files or globs, or a mapping split -> files (with source_split keep, the split "
                          "of their records).")
    format: Literal["csv", "tsv", "jsonl", "parquet", "image_folder", "image_manifest"]
    columns: Columns = Columns()
    header: bool = Field(True, description="CSV/TSV: the first line holds column names.")
    encoding: str = Field("utf-8", description="Any Python codec, or 'auto': BOM, else UTF-8, else detected by charset-normalizer.")
    folder_layout: Literal["label", "split/label"] = Field(
        "label", description="Image folder: root/<label>/<file>, or root/<split>/<label>/<file>."
    )
    allow_absolute_paths: bool = Field(False, description="Manifest: read absolute paths instead of refusing them.")
    image_root: str | None = Field(None, description="Manifest: folder its paths are relative to (default: the manifest's folder).")
    source_split: Literal["ignore", "keep"] = Field(
        "ignore", description="Use the split a source ships (image folder root/<split>/<label>/ or a split column)."
    )
    labels: list[str] | None = Field(None, description="Declared label set after canonicalisation; others are dropped.")
    label_case: Literal["keep", "lower"] = "lower"
    label_map: dict[str, str] = Field(default_factory=dict, description="Raw label (after strip and case) -> canonical label.")
    unknown_label: Literal["drop", "map"] = Field("drop", description="A label outside `labels`: drop it, or map it to `fallback_label`.")
    multi_label: bool = Field(False, description="Each record may hold several labels, joined by `label_separator`.")
    label_separator: str = Field("|", min_length=1, description="Multi-label: separator in the source and in the label column.")
    fallback_label: str | None = None
    metadata: dict[str, MetadataColumn] = Field(default_factory=dict, description=(
        "Extra source columns kept beside the text or image (tabular formats and manifests), by column name."))
    filters: list[MetadataFilter] = Field(default_factory=list, description="Record filters on metadata columns, applied by clean.")
    feature_selection: FeatureSelection = FeatureSelection()
    label_issues: LabelIssuesParams | None = Field(None, description=(
        "This dataset's own label_issues section (policy, relabel_confidence, ...), replacing the global one."))

    @model_validator(mode="after")
    def _metadata_fits_source(self) -> DatasetParams:
        if self.metadata and self.format == "image_folder":
            raise ValueError("metadata columns need a tabular source or an image manifest, not an image folder")
        taken = {name for _, name in self.columns if name}
        clash = sorted(taken & set(self.metadata))
        if clash:
            raise ValueError(f"metadata column {clash[0]!r} is already read as text, label, path or split")
        if self.feature_selection.mutual_information_top is not None:
            kept_missing = sorted(n for n, c in self.metadata.items() if c.type != "categorical" and c.missing == "keep")
            if kept_missing:
                raise ValueError(f"feature_selection.mutual_information_top needs a value in every row: metadata column "
                                 f"{kept_missing[0]!r} keeps missing values (set its missing to drop, mean, median, ...)")
        for f in self.filters:
            column = self.metadata.get(f.column)
            if column is None:
                raise ValueError(f"filter on {f.column!r}: declare it under metadata first")
            if (f.values is not None) != (column.type == "categorical"):
                raise ValueError(f"filter on {f.column!r}: a {column.type} column is filtered by "
                                 + ("values" if column.type == "categorical" else "min and max"))
            for bound in (b for b in (f.min, f.max) if b is not None):
                if column.type == "numeric" and isinstance(bound, str):
                    raise ValueError(f"filter on {f.column!r}: {bound!r} is not a number")
                if column.type == "datetime" and not _is_date(bound, column.format):
                    raise ValueError(f"filter on {f.column!r}: {bound!r} is not a date in {column.format!r}")
        return self

    @model_validator(mode="after")
    def _format_fits_modality(self) -> DatasetParams:
        allowed = TEXT_FORMATS if self.modality == "text" else IMAGE_FORMATS
        if self.format not in allowed:
            raise ValueError(f"format {self.format!r} does not fit modality {self.modality!r}; use one of {list(allowed)}")
        if self.unknown_label == "map" and (self.labels is None or self.fallback_label not in self.labels):
            raise ValueError("unknown_label 'map' needs `labels` and a `fallback_label` that is one of them")
        return self

    @field_validator("files")
    @classmethod
    def _files_stay_inside(cls, value: str | list[str] | dict[str, str | list[str]] | None):
        for split, pattern in file_patterns(value):
            if split is not None and split.strip().lower() not in SOURCE_SPLIT_NAMES:
                raise ValueError(f"split {split!r} is not one of {sorted(SOURCE_SPLIT_NAMES)}")
            parts = pattern.replace("\\", "/").split("/")
            if not pattern.strip() or pattern.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
                raise ValueError(f"{pattern!r} must be a non-empty path inside `source`, without '..'")
        if value is not None and not file_patterns(value):
            raise ValueError("lists no file")
        return value

    @model_validator(mode="after")
    def _files_fit_format(self) -> DatasetParams:
        if self.files is not None and self.format == "image_folder":
            raise ValueError("files is for the text formats and image manifests; an image folder gives its own files "
                             "(folder_layout split/label for a source's splits)")
        mapped = isinstance(self.files, dict)
        if self.source_split == "keep" and mapped and self.columns.split:
            raise ValueError("source_split keep: the files mapping and columns.split both give the split; use one")
        if self.source_split == "keep" and self.format != "image_folder" and not mapped and not self.columns.split:
            raise ValueError("source_split keep needs where the split is: columns.split, or files as a mapping split -> files")
        if self.source_split == "keep" and self.format == "image_folder" and self.folder_layout != "split/label":
            raise ValueError("source_split keep on an image folder needs folder_layout split/label")
        return self

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value == "auto":
            return value
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r} (e.g. auto, utf-8, latin-1, cp1252)") from None
        return value

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (len(set(value)) != len(value) or len(value) < 2):
            raise ValueError("must list at least two distinct labels")
        return value


def file_patterns(files: str | list[str] | dict[str, str | list[str]] | None) -> list[tuple[str | None, str]]:
    """(split or None, pattern) for each entry of a dataset's `files`, in the order given."""
    if files is None:
        return []
    if isinstance(files, dict):
        return [(split, p) for split, patterns in files.items() for p in ([patterns] if isinstance(patterns, str) else patterns)]
    return [(None, p) for p in ([files] if isinstance(files, str) else files)]


# --- stages ---------------------------------------------------------------------------------

class DemoParams(Section):
    text_records: PositiveInt = 400
    image_records: PositiveInt = 240
    image_size: PositiveInt = 96


MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]i?[bB]|[bB])\s*$")


class DaskParams(Section):
    """The cluster of `engine.kind: dask`: an existing one, or a LocalCluster started for the stage."""

    scheduler_address: str | None = Field(
        None, description="tcp://host:8786 joins a running cluster (every worker must see the workspace); null starts a LocalCluster.")
    workers: PositiveInt = Field(2, description="LocalCluster worker processes.")
    threads_per_worker: PositiveInt = 1
    memory_limit: str = Field("3GB", description="Per LocalCluster worker, e.g. 3GB or 512MiB.")

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY.match(value):
            raise ValueError(f"must be a size such as 3GB or 512MiB, got {value!r}")
        return value

    @field_validator("scheduler_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"must be a scheduler URL such as tcp://host:8786, got {value!r}")
        return value


class EngineParams(Section):
    """Where and in what pieces the data stages run; results never depend on any of it."""

    kind: Literal["local", "dask"] = Field("local", description="local: this process (or `workers` local processes); dask: a Dask cluster.")
    workers: PositiveInt = Field(1, description="kind local: worker processes (1: in this process, no server).")
    partition_rows: PositiveInt = Field(
        100_000, description="Records per partition (images: a thirty-second of it): bounds memory, never changes results.")
    chunk_size: PositiveInt = Field(256, description="Unused since every data stage partitions (partition_rows); accepted so that older params files load.")
    dask: DaskParams = DaskParams()


class TextCleanParams(Section):
    repair_mojibake: bool = Field(True, description="Repair mojibake and C1 control characters with ftfy.")
    unescape_html: bool = True
    strip_html_tags: bool = False
    strip_invisible: bool = Field(True, description="Remove zero-width and bidirectional control characters.")
    min_chars: Annotated[int, Field(ge=1)] = 1
    max_chars: PositiveInt = 20_000
    min_words: Annotated[int, Field(ge=0)] = 1
    max_words: PositiveInt | None = None
    languages: list[str] | None = Field(None, description="Keep only texts detected (offline, py3langid) as these ISO 639-1 codes.")
    language_min_confidence: Fraction = Field(0.5, description="Drop a text only when its detected language is this sure.")
    deny_patterns: list[str] = Field(default_factory=list, description="Regular expressions; a text matching any is dropped.")
    min_tokens: PositiveInt | None = Field(
        None, description="Drop texts of fewer tokens of the fine-tuning tokenizer, special tokens included (null: off).")
    max_tokens: PositiveInt | None = Field(
        None, description="Drop texts of more tokens than this (null: off); e.g. finetune.text.max_length, so none is truncated.")

    @field_validator("deny_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _bounds(self) -> TextCleanParams:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")
        if self.max_words is not None and self.min_words > self.max_words:
            raise ValueError(f"min_words {self.min_words} is above max_words {self.max_words}")
        if self.min_tokens is not None and self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens {self.min_tokens} is above max_tokens {self.max_tokens}")
        return self

    @property
    def counts_tokens(self) -> bool:
        """Whether a token bound is set (else the tokenizer is never loaded)."""
        return self.min_tokens is not None or self.max_tokens is not None


def _yaml_off(value: Any) -> Any:
    """An action written `off` without quotes: YAML 1.1 reads it as false."""
    return "off" if value is False else value


Action = Annotated[Literal["drop", "flag", "off"], BeforeValidator(_yaml_off)]


class SizeCheck(Section):
    min_width: PositiveInt = 16
    min_height: PositiveInt = 16
    action: Action = "drop"


OutlierIqr = Annotated[float | None, Field(gt=0, description=(
    "Corpus-relative limit: a value further than this many interquartile ranges beyond the quartile "
    "of this corpus's own values fails too (1.5 is Tukey's fence). null: the absolute limit only."))]


class MinCheck(Section):
    """Fails below `min`, or below this corpus's lower fence (Q1 - outlier_iqr x IQR) when set."""

    min: Annotated[float | None, Field(ge=0)]
    action: Action = "flag"
    outlier_iqr: OutlierIqr = None

    @model_validator(mode="after")
    def _has_a_limit(self) -> MinCheck:
        if self.min is None and self.outlier_iqr is None and self.action != "off":
            raise ValueError("set min, outlier_iqr or both (or action: off)")
        return self


class MaxCheck(Section):
    """Fails above `max`, or above this corpus's upper fence (Q3 + outlier_iqr x IQR) when set."""

    max: Annotated[float | None, Field(ge=0)]
    action: Action = "flag"
    outlier_iqr: OutlierIqr = None

    @model_validator(mode="after")
    def _has_a_limit(self) -> MaxCheck:
        if self.max is None and self.outlier_iqr is None and self.action != "off":
            raise ValueError("set max, outlier_iqr or both (or action: off)")
        return self


class ImageQualityParams(Section):
    """Quality checks: a threshold and an action each (drop the image, keep it and flag it, or off).

    Measures other than size are taken on a copy whose shorter side is at most `working_side`,
    so thresholds do not depend on resolution. Defaults were measured on real photos
    (hymenoptera): at working side 256 the photos among the 398 have sides >= 130 px, aspect
    <= 3.42, grey std >= 17.3, entropy >= 4.2 bits, brightness 46.6 to 209.7, sharpness >= 76.4
    (a Gaussian blur of sigma 2 at the working size brings every photo to 40.1 or below) and
    chroma >= 3.4 for colour photos. The defaults flag 4 of 398: two black-and-white photos
    (chroma 0.0 and 1.96), a rendered ant on white and a not-found placeholder (entropy < 2,
    brightness > 239). Images smaller than the working side are measured as they are: the same
    photos brought down to 224, 128 or 64 px have sharpness >= 95 (none flagged blurry), and
    blurred with a sigma of 2 px at that size, 98.5% or more fall under 45.

    A check with `outlier_iqr` also fails outliers of the corpus's own distribution (every
    decodable image measured first, one extra decode each), for corpora whose normal differs
    from these photos'.
    """

    too_small: SizeCheck = SizeCheck()
    extreme_aspect_ratio: MaxCheck = MaxCheck(max=6.0, action="drop")
    near_constant: MinCheck = Field(MinCheck(min=8.0, action="drop"), description="grey standard deviation (0-255)")
    low_information: MinCheck = Field(MinCheck(min=3.0), description="grey-level entropy in bits (max 8)")
    too_dark: MinCheck = Field(MinCheck(min=25.0), description="mean grey level")
    too_bright: MaxCheck = Field(MaxCheck(max=230.0), description="mean grey level")
    blurry: MinCheck = Field(MinCheck(min=45.0), description="variance of the Laplacian at the working size")
    grayscale: MinCheck = Field(MinCheck(min=2.0), description="mean per-pixel max-min channel difference; off for grey corpora")
    working_side: PositiveInt = 256

    @field_validator("extreme_aspect_ratio")
    @classmethod
    def _ratio_at_least_one(cls, value: MaxCheck) -> MaxCheck:
        if value.max is not None and value.max < 1.0:
            raise ValueError(f"max must be at least 1 (a width/height ratio), got {value.max}")
        return value


class ImageCleanParams(Section):
    max_pixels: PositiveInt = Field(64_000_000, description="Refuse larger images before decoding (decompression bombs).")


class CleanParams(Section):
    text: TextCleanParams = TextCleanParams()
    image: ImageCleanParams = ImageCleanParams()


class PlaceholderParams(Section):
    """Which spans to replace with a placeholder token (<url>, <email>, <phone>, <number>)."""

    urls: bool = False
    emails: bool = False
    phones: bool = False
    numbers: bool = False


class TextNormaliseParams(Section):
    unicode_form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = "NFKC"
    fold_whitespace: bool = True
    lowercase: bool = False
    placeholders: PlaceholderParams = PlaceholderParams()


class ImageNormaliseParams(Section):
    size: PositiveInt = Field(128, description="Output side in pixels.")
    resize: Literal["shorter_side_crop", "pad", "stretch"] = "shorter_side_crop"
    background: tuple[Byte, Byte, Byte] = (255, 255, 255)
    mode: Literal["RGB", "L"] = Field("RGB", description="Colour space of the output: RGB, or L (8-bit grey).")
    encoding: Literal["png", "jpeg"] = "png"
    png_compress_level: Annotated[int, Field(ge=0, le=9)] = Field(
        1, description="zlib level, lossless either way; 0 stores unfiltered pixels. PNGs are written with the Paeth filter "
                       "and zlib's run-length strategy, smaller on photos than the default strategy even at level 9, so "
                       "levels above 1 change little.")
    jpeg_quality: Annotated[int, Field(ge=1, le=100)] = 95
    quality: ImageQualityParams = Field(ImageQualityParams(), description="Checks on the decoded pixels, before resizing.")


class NormaliseParams(Section):
    text: TextNormaliseParams = TextNormaliseParams()
    image: ImageNormaliseParams = ImageNormaliseParams()


class TextNearParams(Section):
    """MinHash + LSH near duplicates of normalised texts; pairs are verified before they merge."""

    shingle: Literal["char", "word"] = "char"
    size: PositiveInt | None = Field(None, description="Shingle length (default: 5 chars or 3 words).")
    num_perm: PositiveInt = 128
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.8, description="Jaccard similarity at which two texts merge.")
    bands: PositiveInt | None = Field(None, description="LSH bands; with rows, replaces the choice made from the threshold.")
    rows: PositiveInt | None = None
    verify: Literal["exact", "estimate"] = Field("exact", description="Check candidates by exact shingle Jaccard, or by the MinHash estimate.")
    group_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.5, description="Looser Jaccard whose clusters share a group_id, so split keeps them on one side."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TextNearParams:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows ({self.bands} x {self.rows}) exceeds num_perm {self.num_perm}")
        if self.group_threshold > self.threshold:
            raise ValueError(f"group_threshold {self.group_threshold} must not exceed threshold {self.threshold}")
        return self


class ImageNearParams(Section):
    """Perceptual-hash near duplicates of normalised images, searched by multi-index hashing."""

    hash: Literal["phash", "dhash"] = "phash"
    max_distance: Annotated[int, Field(ge=0, le=64)] = Field(6, description="Hamming distance (of 64 bits) at which images merge.")
    group_max_distance: Annotated[int, Field(ge=0, le=64)] = Field(10, description="Looser distance whose clusters share a group_id.")

    @model_validator(mode="after")
    def _consistent(self) -> ImageNearParams:
        if self.group_max_distance < self.max_distance:
            raise ValueError(f"group_max_distance {self.group_max_distance} must be at least max_distance {self.max_distance}")
        return self


class SemanticParams(Section):
    """Records whose embeddings (the embed stage's) are close enough to be one record said twice."""

    threshold: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        0.9, description="Cosine of the embed stage's vectors at which two records are semantic neighbours (exact "
                          "search over every pair); null: off. Calibrated by benchmarks/bench_semantic_threshold.py.")
    action: Literal["group", "merge"] = Field(
        "group", description="group: both kept, their groups joined so split keeps them on one side; merge: as near "
                             "duplicates (dedup.survivor and dedup.conflicts decide).")


class DedupParams(Section):
    key: Literal["content", "content_and_label"] = Field(
        "content", description="Exact-duplicate key: the normalised content, or content and label together."
    )
    near: bool = Field(True, description="Merge near duplicates too (else they only share a group_id).")
    survivor: Literal["first_id", "longest", "most_common_label"] = Field("first_id", description="Which record of a cluster is kept.")
    conflicts: Literal["majority", "drop", "keep"] = Field(
        "majority", description="Cluster with several labels: keep the majority label, drop the cluster, or keep one per label."
    )
    text: TextNearParams = TextNearParams()
    image: ImageNearParams = ImageNearParams()
    semantic: SemanticParams = SemanticParams()


class DecontaminateParams(Section):
    """Evaluation sets no corpus record may copy: each record that does is dropped by dedup."""

    root: str = Field("data/eval", description=(
        "Folder that holds every evaluation set, relative to the project root: dedup depends on it in dvc.yaml, so "
        "changing a set reruns dedup."))
    sets: dict[str, DatasetParams] = Field(default_factory=dict, description=(
        "name -> a source read like a dataset's (same formats, under `root`); it applies to the datasets of its "
        "modality. Its labels are not used: any column may serve as `columns.label`."))
    near: bool = Field(True, description="Also near copies, at dedup's merge threshold (else identical content only).")

    @field_validator("sets")
    @classmethod
    def _set_names(cls, value: dict[str, DatasetParams]) -> dict[str, DatasetParams]:
        for name in value:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"set name {name!r} may hold only letters, digits, '_' and '-'")
        return value

    @model_validator(mode="after")
    def _sets_under_root(self) -> DecontaminateParams:
        root = Path(self.root)
        if root.is_absolute() or ".." in root.parts:
            raise ValueError(f"root {self.root!r} must be a folder inside the project")
        for name, evaluation in self.sets.items():
            source = Path(evaluation.source)
            if source.is_absolute() or ".." in source.parts or source.parts[:len(root.parts)] != root.parts:
                raise ValueError(f"set {name!r}: source {evaluation.source!r} must lie under root {self.root!r}, which "
                                 "dvc.yaml lists as dedup's dependency (else a changed set would not rerun dedup)")
        return self


class SplitParams(Section):
    train: Fraction = 0.8
    val: Fraction = 0.1
    test: Fraction = 0.1
    small_class: Literal["fail", "train_only"] = Field(
        "fail", description="A class with fewer groups than splits: fail, or keep it in train only (reported)."
    )
    source_leakage: Literal["keep", "drop"] = Field(
        "keep", description="With a source's own split: val/test records duplicated in train are reported (keep) or dropped."
    )
    semantic_threshold: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        0.9, description="The leakage certificate's semantic section: every val/test record whose nearest train record "
                          "(cosine of the embed stage's vectors) reaches this; null: no semantic section.")

    @model_validator(mode="after")
    def _ratios(self) -> SplitParams:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"train + val + test must be 1.0, got {total:g}")
        if self.train == 0 or self.test == 0:
            raise ValueError("train and test ratios must be above 0")
        return self


class TextAugmenter(Section):
    name: Literal["KeyboardAug", "OcrAug", "RandomCharAug", "RandomWordAug", "SplitAug", "SpellingAug", "SynonymAug"]
    args: dict[str, Any] = Field(default_factory=dict)


class TextAugmentParams(Section):
    variants: Annotated[int, Field(ge=0)] = 1
    classes: list[str] | None = Field(None, description="Augment only these classes (default: all).")
    targets: dict[str, PositiveInt] | None = Field(None, description="Per-class record counts to reach with variants (replaces variants/classes).")
    augmenters: list[TextAugmenter] = Field(default_factory=lambda: [TextAugmenter(name="KeyboardAug", args={"aug_char_p": 0.1, "aug_word_p": 0.2})])


def _default_image_transform() -> dict[str, Any]:
    return {
        "__version__": "2.0.8",
        "transform": {
            "__class_fullname__": "Compose",
            "p": 1.0,
            "transforms": [
                {"__class_fullname__": "HorizontalFlip", "p": 0.5},
                {"__class_fullname__": "RandomBrightnessContrast", "p": 0.8, "brightness_limit": [-0.2, 0.2], "contrast_limit": [-0.2, 0.2]},
                {"__class_fullname__": "Affine", "p": 0.7, "rotate": [-15, 15], "scale": [0.9, 1.1]},
            ],
        },
    }


class ImageAugmentParams(Section):
    variants: Annotated[int, Field(ge=0)] = 1
    classes: list[str] | None = None
    targets: dict[str, PositiveInt] | None = Field(None, description="Per-class record counts to reach with variants (replaces variants/classes).")
    transform: dict[str, Any] = Field(default_factory=_default_image_transform, description="albumentations A.to_dict() form.")

    @field_validator("transform")
    @classmethod
    def _transform_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        """The A.to_dict() shape, on load. The transform names and arguments are albumentations' to
        judge when augment starts (importing it here would add seconds to every stage)."""
        problem = _transform_problem(value.get("transform"), "transform")
        if problem:
            raise ValueError(problem)
        return value


def _transform_problem(node: Any, where: str) -> str | None:
    """What is wrong with the shape of the transform at `where` (and those it composes), or None."""
    if not isinstance(node, dict) or not isinstance(node.get("__class_fullname__"), str):
        return f"{where} must be a transform: a mapping naming its albumentations class in __class_fullname__"
    children = node.get("transforms", [])
    if not isinstance(children, list):
        return f"{where}.transforms must be a list of transforms"
    return next(filter(None, (_transform_problem(child, f"{where}.transforms.{i}") for i, child in enumerate(children))), None)


class AugmentParams(Section):
    text: TextAugmentParams = TextAugmentParams()
    image: ImageAugmentParams = ImageAugmentParams()


class RebalanceParams(Section):
    strategy: Literal[
        "none", "random_over", "random_under", "random_both", "augment_over", "tomek_links", "edited_nearest_neighbours"
    ] = Field(
        "random_over",
        description="imbalanced-learn sampler; augment_over makes new minority records as augmented variants of "
        "originals; the last two clean train by embeddings of the offline models.",
    )
    ratio: Annotated[float, Field(gt=0.0, le=1.0)] = Field(1.0, description="Target smallest/largest class ratio after resampling.")
    counts: dict[str, PositiveInt] | None = Field(
        None, description="Per-class record counts to reach instead of a ratio (random_* strategies)."
    )
    n_neighbors: PositiveInt = Field(3, description="edited_nearest_neighbours: neighbours that must agree.")

    @model_validator(mode="after")
    def _counts_fit_strategy(self) -> RebalanceParams:
        if self.counts is not None and not (self.strategy.startswith("random") or self.strategy == "augment_over"):
            raise ValueError(f"counts applies to the random_* and augment_over strategies, not {self.strategy!r}")
        return self


class EarlyStoppingParams(Section):
    monitor: Literal["macro_f1", "accuracy", "loss"] = Field(
        "macro_f1", description="Validation metric that picks the epoch kept; ties go to the lower validation loss."
    )
    patience: Annotated[int, Field(ge=1)] | None = Field(
        None, description="Stop after this many epochs without a better monitored score (null: run every epoch)."
    )


class TrainingParams(Section):
    """How to fine-tune: strategy, optimiser, schedule, regularisation, loss and stopping (both modalities)."""

    strategy: Literal["linear_probe", "partial", "full", "gradual"] = Field(
        "partial", description="linear_probe: head on cached frozen features; partial: freeze the first layers or blocks; "
        "full: train everything; gradual: unfreeze one layer group per `unfreeze_every` epochs, from the head down."
    )
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 32
    accumulate: PositiveInt = Field(1, description="Gradient accumulation: one optimiser step per this many batches.")
    lr: Annotated[float, Field(gt=0)] = Field(1e-4, description="Learning rate of the head (AdamW).")
    lr_decay: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="Discriminative learning rates: each layer group gets this times the rate of the group above it."
    )
    schedule: Literal["constant", "linear", "cosine"] = Field("cosine", description="Decay after the warmup.")
    warmup: Annotated[float, Field(ge=0, lt=1)] = Field(0.1, description="Fraction of the optimiser steps with a linear warmup.")
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.01, description="AdamW weight decay (not on biases and norm weights).")
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.1, description="Dropout before the new head.")
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0
    clip_norm: Annotated[float, Field(gt=0)] | None = Field(1.0, description="Clip the gradient norm to this (null: no clipping).")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weigh the loss by inverse class frequency, an alternative to resampling."
    )
    unfreeze_every: PositiveInt = Field(1, description="gradual: epochs between unfreezing one more layer group.")
    early_stopping: EarlyStoppingParams = EarlyStoppingParams()
    smote_ratio: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="linear_probe: SMOTE (imbalanced-learn) adds synthetic minority feature vectors until "
        "smallest/largest class reaches this ratio (null: off). They are not records, so only the head sees them.",
    )
    smote_neighbors: PositiveInt = Field(5, description="linear_probe with smote_ratio: SMOTE's k nearest neighbours.")

    @model_validator(mode="after")
    def _smote_for_the_probe(self) -> TrainingParams:
        if self.smote_ratio is not None and self.strategy != "linear_probe":
            raise ValueError(f"smote_ratio applies to strategy linear_probe (a head on cached features), not {self.strategy!r}")
        return self


class TextFinetuneParams(TrainingParams):
    model: str | None = Field(None, description="Hugging Face model folder (default: the packaged all-MiniLM-L6-v2).")
    max_length: PositiveInt = Field(64, description="Tokens per text; longer texts are truncated.")
    freeze_layers: Annotated[int, Field(ge=0)] = Field(
        4, description="partial and gradual: the embeddings and the first k encoder layers stay frozen (run once)."
    )
    epochs: PositiveInt = 2
    lr: Annotated[float, Field(gt=0)] = 5e-4
    lr_decay: Annotated[float, Field(gt=0, le=1)] = 0.5


class ImageFinetuneParams(TrainingParams):
    arch: Literal[
        "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "efficientnet-lite3", "efficientnet-lite4",
        "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3",
        "efficientnet-b4", "efficientnet-b5", "efficientnet-b6", "efficientnet-b7",
    ] = "efficientnet-lite0"
    weights: str | None = Field(None, description="State dict file for `arch` (default: the packaged Lite0 ImageNet weights).")
    image_size: Annotated[int, Field(ge=32)] = Field(128, description="Input side (EfficientNet needs at least 32).")
    freeze_blocks: Annotated[int, Field(ge=0)] = Field(
        14, description="partial and gradual: the stem and the first k MBConv blocks stay frozen (run once)."
    )
    lr: Annotated[float, Field(gt=0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 1e-4
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2

    @model_validator(mode="after")
    def _weights_for_arch(self) -> ImageFinetuneParams:
        if self.arch != "efficientnet-lite0" and self.weights is None:
            raise ValueError(f"arch {self.arch!r} needs `weights` (a state dict file); only efficientnet-lite0 weights are packaged")
        return self


class FinetuneParams(Section):
    threads: PositiveInt = Field(2, description="torch CPU threads; pinned because it changes the bits of the result.")
    portable: bool = Field(True, description=(
        "Every stage's CPU float kernels (torch, MKL, oneDNN, OpenBLAS, numpy) pinned to AVX2 ones chosen alike on "
        "Intel and AMD, so the model stages give the same bytes on any x86-64 CPU of the last ten years; false: "
        "each library picks this CPU's fastest (the bytes then depend on the CPU type)."))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA with mixed precision when present, else CPU.")
    onnx: bool = Field(False, description="Also export model.onnx and check it against torch on a validation batch.")
    text: TextFinetuneParams = TextFinetuneParams()
    image: ImageFinetuneParams = ImageFinetuneParams()


class RandomInitParams(Section):
    """The fine-tuned architecture trained from scratch, all of it, with its own short recipe.

    Its recipe is its own (AdamW, warmup then cosine decay, gradient clipping at 1) so that a sweep
    over finetune's knobs does not retrain it; class weights follow finetune's.
    """

    enabled: bool = True
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0)] = Field(5e-4, description="From scratch wants a larger rate than fine-tuning.")
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    image_size: Annotated[int, Field(ge=32)] | None = Field(
        None, description="Images: train at this side to save time, at least 32 (null: finetune's)."
    )


class BaselinesParams(Section):
    """The negative-transfer check: what fine-tuning must beat on the same split."""

    linear_probe: bool = Field(True, description="Logistic regression on the cached frozen features.")
    random_init: RandomInitParams = RandomInitParams()
    tfidf: bool = Field(True, description="Text: TF-IDF character 2-5-grams with a linear SVM (scikit-learn).")
    metadata_probe: bool = Field(True, description="Datasets with metadata columns: logistic regression on the prepared "
                                 "metadata features alone (how much of the label the metadata gives away).")


class EvaluateParams(Section):
    batch_size: PositiveInt = 64
    calibration_bins: PositiveInt = Field(15, description="Equal-width confidence bins of the expected calibration error.")
    baselines: BaselinesParams = BaselinesParams()


class GatesParams(Section):
    """Thresholds a run must meet (null: not checked); the report stage fails on a violated gate."""

    warn_only: bool = Field(False, description="Report violated gates without failing the stage.")
    max_duplicate_rate: Fraction | None = Field(0.5, description="dedup: share of records merged or dropped.")
    max_drop_rate: Fraction | None = Field(0.25, description="Any stage: share of its input dropped.")
    max_drop_rate_per_reason: Fraction | None = Field(0.15, description="Any stage: share of its input dropped for one reason.")
    min_records_per_class_per_split: Annotated[int, Field(ge=0)] | None = 1
    min_test_macro_f1: Fraction | None = None
    min_margin_over_baselines: Annotated[float, Field(ge=-1.0, le=1.0)] | None = Field(
        None, description="evaluate: test macro-F1 of the model minus each baseline's (0.0: a model that loses to any fails)."
    )
    max_cross_split_leaks: Annotated[int, Field(ge=0)] | None = 0
    max_semantic_leaks: Annotated[int, Field(ge=0)] | None = Field(
        0, description="split: val/test records whose nearest train record is at split.semantic_threshold or above (the "
                       "semantic stage keeps pairs at dedup.semantic.threshold on one side; with that off, or above "
                       "split.semantic_threshold, a templated corpus may hold many).")
    max_test_changed_fraction: Fraction | None = Field(
        0.02, description="pipeline diff: share of test records added, removed or changed against the base revision."
    )


class ReportParams(Section):
    examples: PositiveInt = Field(6, description="Examples per section (duplicate clusters, flagged images).")


class Params(Section):
    """The whole of `params.yaml`."""

    seed: int = 42
    engine: EngineParams = EngineParams()
    demo: DemoParams = DemoParams()
    datasets: dict[str, DatasetParams]
    clean: CleanParams = CleanParams()
    normalise: NormaliseParams = NormaliseParams()
    dedup: DedupParams = DedupParams()
    decontaminate: DecontaminateParams = DecontaminateParams()
    label_issues: LabelIssuesParams = LabelIssuesParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    rebalance: RebalanceParams = RebalanceParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()
    gates: GatesParams = GatesParams()

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, value: dict[str, DatasetParams]) -> dict[str, DatasetParams]:
        if not value:
            raise ValueError("must name at least one dataset")
        for name in value:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"dataset name {name!r} may hold only letters, digits, '_' and '-'")
        return value

    def dataset(self, name: str) -> DatasetParams:
        """The params of dataset `name`, or a ParamsError listing the known names."""
        if name not in self.datasets:
            raise ParamsError(f"dataset {name!r} is not in params 'datasets' (known: {sorted(self.datasets)})")
        return self.datasets[name]


class StrictLoader(yaml.SafeLoader):
    """YAML SafeLoader that refuses a key given twice in one mapping (the last would silently win)."""


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if repeated:
        raise yaml.constructor.ConstructorError(None, None, f"key(s) {repeated} given twice", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raise ParamsError naming file, key and problem."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=StrictLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read params file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(describe_errors(exc, path)) from None


def describe_errors(exc: ValidationError, path: Path) -> str:
    """One line per problem: `file: key.path: what was expected. Got ... instead.`"""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<top level>"
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: {key}: unknown key (check its spelling and section)")
            continue
        got = err.get("input", {})
        got_text = "" if isinstance(got, dict) else " Got null instead." if got is None else f" Got {got!r} instead."
        lines.append(f"{path}: {key}: {err['msg']}.{got_text}")
    return "\n".join(lines)
