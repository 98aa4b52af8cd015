"""User-facing errors have one home and one treatment; everything else keeps its traceback."""
from __future__ import annotations

import ast
import inspect
import logging
from pathlib import Path

import pytest

from conftest import ROOT, write_params
from pipeline import errors
from pipeline.errors import SplitError, UserError
from pipeline.stages.base import Outcome, stage_main


def _run_stage(tmp_path: Path, run) -> int:
    params = write_params(tmp_path / "params.yaml")
    return stage_main("probe", "Probe: a stage for tests.", lambda parser: None, run,
                      ["--dataset", "t", "--params", str(params), "--metrics", str(tmp_path / "m.json")])


def test_a_user_error_is_one_line_and_a_non_zero_exit(tmp_path, caplog):
    def run(ctx):
        raise SplitError("class 'refund' has 1 group(s), too few for 3 splits")

    with caplog.at_level(logging.ERROR):
        assert _run_stage(tmp_path, run) == 1
    messages = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in messages] == ["probe@t failed: class 'refund' has 1 group(s), too few for 3 splits"]
    assert messages[0].exc_info is None and not (tmp_path / "m.json").exists()


def test_a_bug_keeps_its_traceback(tmp_path):
    """A library's ValueError is not bad input: it must not be reported as one."""
    def run(ctx):
        raise ValueError("Expected n_neighbors <= n_samples")

    with pytest.raises(ValueError, match="n_neighbors"):
        _run_stage(tmp_path, run)


def test_a_params_error_exits_2(tmp_path):
    (tmp_path / "params.yaml").write_text("datasets: {t: {modality: text, source: x.tsv, format: tsv, colour: red}}\n")
    code = stage_main("probe", "Probe.", lambda parser: None, lambda ctx: Outcome(0, 0),
                      ["--dataset", "t", "--params", str(tmp_path / "params.yaml"), "--metrics", str(tmp_path / "m.json")])
    assert code == 2


def test_every_error_meant_for_users_is_a_user_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 8 and all(issubclass(c, UserError) for c in classes)


def test_no_stage_turns_library_errors_into_user_errors():
    """Stages catch only their own exceptions: `except ValueError` (or broader) would hide bugs as bad input."""
    broad = {"ValueError", "Exception", "BaseException", "RuntimeError", "TypeError", "KeyError"}
    found = []
    for path in sorted((ROOT / "pipeline" / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ExceptHandler):
                names = [n.id for n in ast.walk(node.type) if isinstance(n, ast.Name)] if node.type else ["<bare>"]
                found += [f"{path.name}:{node.lineno} except {n}" for n in names if n in broad or n == "<bare>"]
    assert not found, found
