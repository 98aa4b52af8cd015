"""Params: a good file loads; any unknown key or bad value fails naming the file, the key and the problem."""
from __future__ import annotations

import pytest

from conftest import ROOT, make_params, write_params
from pipeline.errors import ParamsError
from pipeline.params import Params, load_params

TEXT = {"modality": "text", "source": "corpus.tsv", "format": "tsv"}
IMAGES = {"modality": "image", "source": "imgs", "format": "image_folder"}


def load_error(path, datasets=None, **sections) -> str:
    """The message of the ParamsError raised when loading a params file with these contents."""
    write_params(path, datasets, **sections)
    with pytest.raises(ParamsError) as info:
        load_params(path)
    return str(info.value)


def test_load_params_good_file(tmp_path):
    path = write_params(
        tmp_path / "params.yaml",
        {"txt": {**TEXT, "labels": ["a", "b"], "label_map": {"x": "a"}}, "img": IMAGES},
        seed=7,
        clean={"text": {"min_chars": 3}},
        split={"train": 0.7, "val": 0.15, "test": 0.15},
    )
    params = load_params(path)
    assert isinstance(params, Params)
    assert params.seed == 7
    assert params.clean.text.min_chars == 3
    assert params.clean.text.max_chars == 20_000  # untouched keys keep their defaults
    assert params.split.val == 0.15
    assert params.dataset("txt").labels == ["a", "b"]
    assert params.dataset("img").folder_layout == "label"


def test_project_params_file_loads():
    params = load_params(ROOT / "params.yaml")
    assert params.datasets
    for name in params.datasets:
        assert params.dataset(name).modality in ("text", "image")


def test_params_are_frozen():
    params = make_params()
    with pytest.raises(ValueError):
        params.seed = 1


@pytest.mark.parametrize("datasets, sections, key", [
    (None, {"sed": 42}, "sed"),
    (None, {"clean": {"txt": {}}}, "clean.txt"),
    (None, {"clean": {"text": {"min_char": 2}}}, "clean.text.min_char"),
    (None, {"split": {"train": 0.8, "val": 0.1, "test": 0.1, "shuffle": True}}, "split.shuffle"),
    ({"t": {**TEXT, "colums": {"text": "body"}}}, {}, "datasets.t.colums"),
    ({"t": {**TEXT, "columns": {"txt": "body"}}}, {}, "datasets.t.columns.txt"),
])
def test_unknown_key_names_file_and_dotted_key(tmp_path, datasets, sections, key):
    message = load_error(tmp_path / "params.yaml", datasets, **sections)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: {key}: ")
    assert "unknown key" in message


@pytest.mark.parametrize("datasets, sections, key, expected", [
    (None, {"split": {"train": 0.8, "val": 0.2, "test": 0.1}}, "split", "must be 1.0, got 1.1"),
    (None, {"split": {"train": 0.0, "val": 0.5, "test": 0.5}}, "split", "above 0"),
    ({"t": {**TEXT, "format": "xls"}}, {}, "datasets.t.format", "'csv', 'tsv', 'jsonl', 'parquet'"),
    ({"t": {**TEXT, "format": "image_folder"}}, {}, "datasets.t", "does not fit modality 'text'"),
    ({"t": {**IMAGES, "format": "csv"}}, {}, "datasets.t", "use one of ['image_folder', 'image_manifest']"),
    (None, {"clean": {"text": {"min_chars": -1}}}, "clean.text.min_chars", "greater than or equal to 1"),
    (None, {"clean": {"text": {"max_tokens": 0}}}, "clean.text.max_tokens", "greater than 0"),
    (None, {"clean": {"text": {"min_tokens": 2.5}}}, "clean.text.min_tokens", "valid integer"),
    (None, {"clean": {"text": {"min_tokens": True}}}, "clean.text.min_tokens", "(or null, to leave it unset), not true or false"),
    (None, {"clean": {"text": {"min_tokens": 600, "max_tokens": 512}}}, "clean.text", "min_tokens 600 is above max_tokens 512"),
    (None, {"normalise": {"image": {"quality": {"extreme_aspect_ratio": {"max": 0.5}}}}}, "normalise.image.quality.extreme_aspect_ratio", "at least 1"),
    (None, {"normalise": {"image": {"resize": "crop"}}}, "normalise.image.resize", "'shorter_side_crop', 'pad' or 'stretch'"),
    (None, {"engine": {"workers": 0}}, "engine.workers", "greater than 0"),
    (None, {"seed": "abc"}, "seed", "valid integer"),
    ({"t": {**TEXT, "labels": ["a", "a"]}}, {}, "datasets.t.labels", "two distinct labels"),
    ({"t": {"modality": "text", "format": "tsv"}}, {}, "datasets.t.source", "Field required"),
    ({"bad name": TEXT}, {}, "datasets", "may hold only letters"),
])
def test_bad_value_names_key_and_expectation(tmp_path, datasets, sections, key, expected):
    message = load_error(tmp_path / "params.yaml", datasets, **sections)
    assert message.startswith(f"{tmp_path / 'params.yaml'}: {key}: ")
    assert expected in message


def test_bad_value_message_says_what_was_found(tmp_path):
    message = load_error(tmp_path / "params.yaml", None, clean={"text": {"min_chars": -1}})
    assert message.endswith("Got -1 instead.")


def test_every_problem_is_listed(tmp_path):
    message = load_error(tmp_path / "params.yaml", {"t": {**TEXT, "format": "xls"}}, sed=1, engine={"workers": 0})
    assert len(message.splitlines()) == 3
    for key in ("datasets.t.format", "sed", "engine.workers"):
        assert f": {key}: " in message


def test_empty_datasets_are_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("datasets: {}\n")
    with pytest.raises(ParamsError, match="datasets: .*at least one dataset"):
        load_params(path)


@pytest.mark.parametrize("text, expected", [
    ("datasets: [unclosed\n", "not valid YAML"),
    ("datasets:\n  t: {modality: text\n", "not valid YAML"),
    ("\tseed: 1\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping at the top level, got list"),
    ("", "expected a mapping at the top level, got NoneType"),
    ("just a string\n", "expected a mapping"),
])
def test_unusable_yaml_is_a_params_error(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=expected) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: ")


def test_missing_file_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match=r"nope\.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_params_file_in_another_encoding_is_a_params_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes("# réglages\nseed: 1\n".encode("latin-1"))
    with pytest.raises(ParamsError, match="params.yaml"):
        load_params(path)


def test_unknown_encoding_is_refused_at_load(tmp_path):
    with pytest.raises(ParamsError, match="datasets.t.encoding"):
        load_params(write_params(tmp_path / "params.yaml", {"t": {**TEXT, "encoding": "utf-9"}}))


@pytest.mark.parametrize("background", [[300, 0, 0], [-1, 0, 0]])
def test_background_outside_0_255_is_refused(tmp_path, background):
    with pytest.raises(ParamsError, match="normalise.image.background"):
        load_params(write_params(tmp_path / "params.yaml", normalise={"image": {"background": background}}))


def test_dataset_lookup():
    params = make_params({"b_set": TEXT, "a_set": IMAGES})
    assert params.dataset("b_set").format == "tsv"
    with pytest.raises(ParamsError, match=r"'nope'.*known: \['a_set', 'b_set'\]"):
        params.dataset("nope")


def test_an_image_side_efficientnet_cannot_take_is_refused(tmp_path):
    """Below 32 pixels EfficientNet's padding fails mid-training; params refuse it up front."""
    from pipeline.params import Params

    with pytest.raises(ValueError, match="image_size"):
        Params.model_validate({"evaluate": {"baselines": {"random_init": {"image_size": 24}}}})
    with pytest.raises(ValueError, match="image_size"):
        Params.model_validate({"finetune": {"image": {"image_size": 16}}})


def test_engine_params_check_the_cluster_settings():
    assert make_params(engine={"kind": "dask", "dask": {"memory_limit": "512MiB"}}).engine.dask.memory_limit == "512MiB"
    with pytest.raises(ValueError, match="must be a size such as 3GB"):
        make_params(engine={"dask": {"memory_limit": "lots"}})
    with pytest.raises(ValueError, match="must be a scheduler URL"):
        make_params(engine={"dask": {"scheduler_address": "localhost:8786"}})
    with pytest.raises(ValueError, match="kind"):
        make_params(engine={"kind": "ray"})


@pytest.mark.parametrize("extra, message", [
    ({"files": {"trian": "a.tsv"}}, "split 'trian' is not one of"),
    ({"files": "../elsewhere/*.tsv"}, "must be a non-empty path inside `source`, without '..'"),
    ({"files": ["/etc/passwd"]}, "must be a non-empty path inside `source`"),
    ({"files": []}, "lists no file"),
    ({"files": {"train": "a.tsv"}, "source_split": "keep", "columns": {"split": "part"}}, "use one"),
    ({"source_split": "keep"}, "source_split keep needs where the split is"),
])
def test_files_and_split_params_are_checked_before_anything_runs(tmp_path, extra, message):
    assert message in load_error(tmp_path / "params.yaml", {"t": {**TEXT, **extra}})


def test_files_are_for_the_text_formats(tmp_path):
    assert "files is for the text formats" in load_error(tmp_path / "params.yaml", {"i": {**IMAGES, "files": "*.png"}})
