"""Every bad params value fails before any work, naming the params file and the full dotted key.

The model tree of `Params` is walked: each field gets invalid values made from its annotation (a
wrong type, null where it takes none, a number past its bounds, a choice not among its Literal's)
and each section an unknown key, and loading must refuse each one with one line
`file: dotted.key: ...`. A field the walk cannot make a bad value for fails the completeness test,
so a field added later is covered or listed. What params cannot know (does the source exist, is the
column in the file; does albumentations have the transform) the stage refuses before it writes
anything, in the same form.
"""
from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from conftest import write_params
from pipeline.errors import ParamsError
from pipeline.params import Params, load_params
from pipeline.stages import augment, clean

TEXT = {"modality": "text", "source": "corpus.tsv", "format": "tsv"}
EVALUATION = {"modality": "text", "source": "data/eval/e.tsv", "format": "tsv"}
WITH_METADATA = {**TEXT, "metadata": {"m": {"type": "numeric"}}, "filters": [{"column": "m", "min": 0.5}],
                 "label_issues": {"policy": "flag"}}
DEFAULTS = Params.model_validate({"datasets": {"t": WITH_METADATA}, "decontaminate": {"sets": {"e": EVALUATION}}}
                                 ).model_dump(mode="json")  # every key, valid
UNKNOWN = "no_such_key"

# Fields whose contents are free-form: only their own type is walked (a list where the mapping goes).
FREE_FORM = {
    "augment.text.augmenters.0.args": "nlpaug's keyword arguments, any names and values: augment builds each "
                                      "augmenter before any work and names the one nlpaug refuses",
    "augment.image.transform": "albumentations' A.to_dict() form: its shape is checked on load, its names and "
                               "arguments by albumentations when augment starts (importing it on load would add "
                               "seconds to every stage)",
}
# Fields that get no bad value at all, with why. None so far: every field refuses something.
SKIPPED: dict[str, str] = {}
# Values the annotation does not rule out but a validator does: field -> [(value, dotted key named)].
SEMANTIC = {
    "datasets": [({"bad name": TEXT}, "datasets"), ({}, "datasets")],
    "datasets.t": [({**TEXT, "format": "image_folder"}, "datasets.t"), ({**TEXT, "source_split": "keep"}, "datasets.t")],
    "datasets.t.encoding": [("utf-9", "datasets.t.encoding")],
    "datasets.t.labels": [(["a"], "datasets.t.labels"), (["a", "a"], "datasets.t.labels")],
    "datasets.t.files": [("../x.tsv", "datasets.t.files"), ("/etc/x.tsv", "datasets.t.files"), ([], "datasets.t.files"),
                         ({"trian": "a.tsv"}, "datasets.t.files"), ([5], "datasets.t.files"), ({"train": 5}, "datasets.t.files")],
    "engine.dask.memory_limit": [("lots", "engine.dask.memory_limit")],
    "engine.dask.scheduler_address": [("localhost:8786", "engine.dask.scheduler_address")],
    "clean.text.deny_patterns": [(["("], "clean.text.deny_patterns")],
    "clean.text.min_chars": [(30_000, "clean.text")],
    "normalise.image.quality.extreme_aspect_ratio": [({"max": 0.5}, "normalise.image.quality.extreme_aspect_ratio")],
    "dedup.text.group_threshold": [(0.9, "dedup.text")],
    "dedup.image.max_distance": [(20, "dedup.image")],
    "split.train": [(0.9, "split")],
    "finetune.image.arch": [("efficientnet-b0", "finetune.image")],
    "finetune.text.smote_ratio": [(0.5, "finetune.text")],
    "augment.image.transform": [({}, "augment.image.transform"), ({"transform": "HorizontalFlip"}, "augment.image.transform"),
                                ({"transform": {"__class_fullname__": "Compose", "transforms": [{"p": 0.5}]}},
                                 "augment.image.transform")],
}


@dataclass(frozen=True)
class Case:
    """One bad value: the field walked, where the value goes, and the dotted key the message must name."""

    field: str
    path: tuple[str | int, ...]
    value: Any
    key: str
    why: str


# --- the walk -------------------------------------------------------------------------------

Node = FieldInfo | type[BaseModel]


def walk(model: type[BaseModel], path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Node]]:
    """(path, field) for every field under `model`, nested models included, and (path, model) per model."""
    yield path, model
    for name, info in model.model_fields.items():
        yield (*path, name), info
        for step, sub in _models_in(info.annotation, _at(DEFAULTS, (*path, name))):
            yield from walk(sub, (*path, name, *step))


def _models_in(annotation: Any, default: Any) -> Iterator[tuple[tuple[str | int, ...], type[BaseModel]]]:
    """The models a field holds, each with the steps from the field to the one in DEFAULTS (a dict
    of models: its first key; a list of them: index 0)."""
    core, _, _ = _unwrap(annotation)
    origin, args = get_origin(core), get_args(core)
    if _is_model(core) and default is not None:  # an optional section left out (an evaluation set's label_issues) is walked elsewhere
        yield (), core
    elif origin is dict and _is_model(args[1]) and default:  # an empty one (an evaluation set's metadata) is walked elsewhere
        yield (next(iter(default)),), args[1]
    elif origin is list and _is_model(args[0]) and default:
        yield (0,), args[0]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unwrap(annotation: Any, constraints: tuple = ()) -> tuple[Any, list[Any], bool]:
    """(core annotation, its constraints, whether it takes null) with Optional and Annotated opened."""
    found, nullable = list(constraints), False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation, *meta = get_args(annotation)
            found += [c for m in meta for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
        elif origin in (Union, UnionType) and NoneType in get_args(annotation):
            nullable = True
            rest = [a for a in get_args(annotation) if a is not NoneType]
            annotation = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # the union less null
        else:
            return annotation, found, nullable


def _at(tree: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


# --- bad values from an annotation ----------------------------------------------------------

def bad_values(annotation: Any, constraints: tuple = (), default: Any = None) -> list[tuple[tuple[str | int, ...], Any, str]]:
    """(steps to the key named, value, why) for values this annotation refuses."""
    core, found, nullable = _unwrap(annotation, constraints)
    made = [] if nullable or core is Any else [((), None, "null")]
    origin = get_origin(core)
    if core is bool:
        made += [((), [True], "list"), ((), "maybe", "str"), ((), {"a": 1}, "dict")]
    elif core in (int, float):
        made += [((), "abc", "str"), ((), [1], "list"), ((), True, "bool")] + ([((), 1.5, "fraction")] if core is int else [])
        made += [((), value, why) for value, why in _past_bounds(core, found)]
    elif core is str:
        made += [((), {"a": "b"}, "dict"), ((), ["a"], "list"), ((), 5, "int")]
        made += [((), "", "empty") for c in found if isinstance(c, at.MinLen) and c.min_length > 0]
    elif origin is Literal:
        made += [((), "not_a_choice", "choice"), ((), [get_args(core)[0]], "list")]
    elif origin is list:
        made += [((), "abc", "str"), ((), {"a": 1}, "dict")]
        if not _is_model(get_args(core)[0]):
            made += [((0, *steps), [value], f"item-{why}") for steps, value, why in bad_values(get_args(core)[0])]
    elif origin is dict:
        made += [((), ["a"], "list"), ((), "abc", "str")]
        if not _is_model(get_args(core)[1]):
            made += [(("k", *steps), {"k": value}, f"value-{why}") for steps, value, why in bad_values(get_args(core)[1])]
    elif origin is tuple:
        items = get_args(core)
        made += [((), "abc", "str"), ((len(items) - 1,), list(default)[:-1], "short")]
        made += [((0, *steps), [value, *list(default)[1:]], f"item-{why}") for steps, value, why in bad_values(items[0])]
    elif _is_model(core):
        made += [((), "abc", "str"), ((), [1], "list")]
    elif origin in (Union, UnionType):
        taken = {get_origin(a) or a for a in get_args(core)}
        pool = {int: 5, float: 1.5, bool: True, str: "abc", list: ["abc"], dict: {"a": "b"}}
        made += [((), value, type_.__name__) for type_, value in pool.items() if type_ not in taken and not
                 (type_ is bool and int in taken)]
    return made


def _past_bounds(kind: type, constraints: list[Any]) -> list[tuple[Any, str]]:
    """A value just past each bound of a number."""
    step = 1 if kind is int else 0.5
    past = []
    for c in constraints:
        if isinstance(c, at.Ge):
            past.append((c.ge - step, f"below-{c.ge}"))
        elif isinstance(c, at.Gt):
            past.append((c.gt, f"not-above-{c.gt}"))
        elif isinstance(c, at.Le):
            past.append((c.le + step, f"above-{c.le}"))
        elif isinstance(c, at.Lt):
            past.append((c.lt, f"not-below-{c.lt}"))
    return past


def dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def cases() -> list[Case]:
    """Every bad value of the walk, every unknown key, and the SEMANTIC ones."""
    made = []
    for path, info in walk(Params):
        field = dotted(path)
        made += [Case(field, path, value, key, "semantic") for value, key in SEMANTIC.get(field, [])]
        if not isinstance(info, FieldInfo):
            made.append(Case(field or "<top>", (*path, UNKNOWN), 1, dotted((*path, UNKNOWN)), "unknown-key"))
            continue
        if field in SKIPPED:
            continue
        for steps, value, why in bad_values(info.annotation, tuple(info.metadata), _at(DEFAULTS, path)):
            made.append(Case(field, path, value, dotted((*path, *steps)), why))
    return made


CASES = cases()
# Models whose every key must be written out around a value: those with required keys (a dataset).
FULL = {path for path, node in walk(Params) if _is_model(node) and any(f.is_required() for f in node.model_fields.values())}


def params_with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """Valid, small params with `value` at `path`: the section holding it, lists and models with
    required keys keep every default; other sections around it hold only the way down."""
    node = copy.deepcopy(_at(DEFAULTS, path[:-1])) if len(path) > 1 else {}
    node[path[-1]] = value
    for depth in range(len(path) - 2, -1, -1):
        outer = path[:depth]
        full = isinstance(path[depth], int) or outer in FULL
        container = copy.deepcopy(_at(DEFAULTS, outer)) if full and outer else {}
        container[path[depth]] = node
        node = container
    return {"datasets": {"t": TEXT}, **node}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("walk")


BY_FIELD: dict[str, list[tuple[int, Case]]] = {}
for number, one in enumerate(CASES):
    BY_FIELD.setdefault(one.field, []).append((number, one))


@pytest.mark.parametrize("field", list(BY_FIELD))
def test_every_bad_value_names_the_file_and_the_dotted_key(folder, field):
    """Each bad value of the field (or section) fails to load with one line `file: dotted.key: ...`."""
    assert [problem for n, case in BY_FIELD[field] if (problem := refusal_problem(folder / f"{n}.yaml", case))] == []


def refusal_problem(path: Path, case: Case) -> str | None:
    """What is wrong with how loading params holding `case` fails (None: refused as it should be)."""
    path.write_text(yaml.safe_dump(params_with(case.path, case.value), sort_keys=False))
    try:
        load_params(path)
    except ParamsError as exc:
        lines = str(exc).splitlines()
    else:
        return f"{case.key} = {case.value!r} ({case.why}) was accepted"
    if len(lines) == 1 and re.match(rf"{re.escape(str(path))}: {re.escape(case.key)}: \S", lines[0]):
        return None
    return f"{case.key} = {case.value!r} ({case.why}): {lines}"


def test_the_walk_covers_every_field_and_section():
    """A field with no bad value of its type (a type `bad_values` does not know) fails here until
    `bad_values` learns it or SKIPPED lists it; every section gets an unknown key."""
    walked = {dotted(path) for path, node in walk(Params) if isinstance(node, FieldInfo)}
    sections = {dotted(path) or "<top>" for path, node in walk(Params) if _is_model(node)}
    covered = {c.field for c in CASES if c.why not in ("unknown-key", "semantic", "null")}
    assert walked - covered - set(SKIPPED) == set()
    assert sections == {c.field for c in CASES if c.why == "unknown-key"}
    assert set(SKIPPED) | set(FREE_FORM) <= walked and set(SEMANTIC) <= walked | sections  # no stale entries
    assert len(walked) > 150 and {"datasets.t.columns.split", "finetune.portable", "augment.text.augmenters.0.name"} <= walked


def test_the_valid_base_loads(folder):
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(params_with(("seed",), 7)))
    assert load_params(path).seed == 7


def test_yaml_off_is_the_off_action(tmp_path):
    """YAML 1.1 reads a bare `off` as false: a quality check's action takes it as 'off'."""
    path = tmp_path / "params.yaml"
    path.write_text("datasets: {t: {modality: text, source: c.tsv, format: tsv}}\n"
                    "normalise: {image: {quality: {grayscale: {min: 2.0, action: off}}}}\n")
    assert load_params(path).normalise.image.quality.grayscale.action == "off"


def test_unknown_augmenter_is_refused_on_load(tmp_path):
    path = write_params(tmp_path / "params.yaml", augment={"text": {"augmenters": [{"name": "KeyboardAug"}, {"name": "Typo"}]}})
    with pytest.raises(ParamsError, match=rf"^{re.escape(str(path))}: augment\.text\.augmenters\.1\.name: .*'Typo'"):
        load_params(path)


# --- what only the stages can check ---------------------------------------------------------

def one_error_line(log: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """The one error a stage logged, checked to be a single line without a traceback."""
    errors = [r for r in log.records if r.levelno >= logging.ERROR]
    captured = capsys.readouterr()
    assert len(errors) == 1 and errors[0].exc_info is None, [r.getMessage() for r in errors]
    assert "Traceback" not in captured.out + captured.err + log.text
    assert "\n" not in errors[0].getMessage()
    return errors[0].getMessage()


CSV = "text,label\nthe parcel came late,shipping\nrefund my card,billing\n"
SOURCES = [  # dataset entry, the file written, its contents, the dotted key named
    ({**TEXT, "source": "nowhere.tsv"}, None, "", "datasets.t.source"),
    ({**TEXT, "source": "c.csv", "format": "csv", "columns": {"text": "body"}}, "c.csv", CSV, "datasets.t.columns.text"),
    ({**TEXT, "source": "c.tsv", "columns": {"label": "queue"}}, "c.tsv", CSV.replace(",", "\t"), "datasets.t.columns.label"),
    ({**TEXT, "source": "c.csv", "format": "csv", "header": False, "columns": {"text": "1", "label": "2"}}, "c.csv", CSV,
     "datasets.t.columns.label"),
    ({**TEXT, "source": "c.csv", "format": "csv", "source_split": "keep", "columns": {"split": "fold"}}, "c.csv", CSV,
     "datasets.t.columns.split"),
    ({**TEXT, "source": "c.jsonl", "format": "jsonl", "columns": {"text": "body"}}, "c.jsonl",
     '{"text": "the parcel came late", "label": "shipping"}\n{"text": "refund my card", "label": "billing"}\n',
     "datasets.t.columns.text"),
    ({**TEXT, "source": "parts", "format": "csv", "files": ["a.csv", "b-*.csv"]}, "parts/a.csv", CSV, "datasets.t.files"),
    ({"modality": "image", "source": "m.csv", "format": "image_manifest", "columns": {"path": "file"}}, "m.csv",
     "path,label\na.png,cat\n", "datasets.t.columns.path"),
]


@pytest.mark.parametrize("dataset, name, content, key", SOURCES, ids=[f"{s[3]}-{i}" for i, s in enumerate(SOURCES)])
def test_a_bad_source_or_column_fails_before_any_work(tmp_path, caplog, capsys, dataset, name, content, key):
    """clean exits non-zero with one line naming the params file and the dotted key, and writes nothing."""
    if name:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    params = write_params(tmp_path / "params.yaml", {"t": dataset})
    out = tmp_path / "data"
    argv = ["--dataset", "t", "--params", str(params), "--root", str(tmp_path), "--output", str(out / "clean.parquet"),
            "--metrics", str(tmp_path / "m.json"), "--ledger", str(out / "ledger.parquet"), "--timings", str(tmp_path / "t.json")]
    assert clean.main(argv) != 0
    assert f"failed: {params}: {key}: " in one_error_line(caplog, capsys)
    left = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert left <= {"params.yaml", "data", name, "parts"}, left  # no record set, ledger, metrics or scratch folder


def test_an_unknown_transform_fails_augment_before_any_work(tmp_path, caplog, capsys):
    """A transform albumentations does not have: augment names the params file and the transform's key."""
    transform = copy.deepcopy(DEFAULTS["augment"]["image"]["transform"])
    transform["transform"]["transforms"][1]["__class_fullname__"] = "RandomBrightnesContrast"
    params = write_params(tmp_path / "params.yaml", {"im": {"modality": "image", "source": "imgs", "format": "image_folder"}},
                          augment={"image": {"transform": transform}})
    out = tmp_path / "augment"
    argv = ["--dataset", "im", "--params", str(params), "--input", str(tmp_path / "split"),
            "--output", str(out / "train.parquet"), "--preview", str(out / "preview"),
            "--metrics", str(tmp_path / "m.json"), "--ledger", str(tmp_path / "l.parquet")]
    assert augment.main(argv) != 0
    key = "augment.image.transform.transform.transforms.1.__class_fullname__"
    expected = f"failed: {params}: {key}: unknown albumentations transform 'RandomBrightnesContrast'"
    assert expected in one_error_line(caplog, capsys)
    assert {p.name for p in tmp_path.rglob("*")} <= {"params.yaml", "augment"}
