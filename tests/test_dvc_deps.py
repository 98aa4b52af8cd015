"""dvc.yaml lists, for every stage, all of the project code the stage runs.

A stage's import closure inside `pipeline/` is computed from the source with `ast` (every import
anywhere in a module, function-level ones included, but not those under `if TYPE_CHECKING:`, plus
the packages' `__init__.py` files that importing runs). A file of the closure that no dep covers means a change to it would leave the
stage "up to date" over stale outputs; a code dep outside the closure reruns the stage for
nothing.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"


def module_file(module: str) -> Path | None:
    """The source file of a dotted module inside the project, or None (a third-party module)."""
    if module.split(".")[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, module: str) -> set[str]:
    """Dotted names of everything `path` imports (a `from x import y` adds x.y too: it may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node that can run: all of them but the bodies of `if TYPE_CHECKING:` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_closure(module: str) -> set[Path]:
    """Project files that importing `module` runs: its imports, theirs, and the packages on the way."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            prefix = ".".join(parts[:depth])
            path = module_file(prefix)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_modules(path, prefix))
    return seen


def stage_definitions() -> dict[str, dict]:
    """Each stage of dvc.yaml (foreach stages by their `do` body)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def stage_module(stage: dict) -> str:
    match = re.search(r"-m\s+(pipeline\.stages\.\w+)", stage["cmd"])
    assert match, f"cmd does not run a pipeline stage module: {stage['cmd']!r}"
    return match.group(1)


def code_deps(stage: dict) -> list[str]:
    """The deps that are project code: paths inside `pipeline/` (files or folders)."""
    return [d.rstrip("/") for d in stage.get("deps", []) if isinstance(d, str) and (d == PACKAGE or d.startswith(f"{PACKAGE}/"))]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(f"{d}/") for d in deps)


def relative(paths: set[Path]) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in paths}


STAGES = stage_definitions()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_cover_the_code_a_stage_imports(name):
    stage = STAGES[name]
    missing = sorted(p for p in relative(import_closure(stage_module(stage))) if not covered(p, code_deps(stage)))
    assert not missing, f"dvc.yaml stage {name!r} runs code its deps do not list: {missing}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_code_the_stage_imports(name):
    stage = STAGES[name]
    closure = relative(import_closure(stage_module(stage)))
    unused = [d for d in code_deps(stage) if not any(covered(p, [d]) for p in closure)]
    assert not unused, f"dvc.yaml stage {name!r} lists code deps it never imports (or that do not exist): {unused}"


def test_closure_follows_function_level_and_from_imports():
    """The closure is not the top-level imports alone: dedup reaches neardup only inside functions."""
    closure = relative(import_closure("pipeline.stages.dedup"))
    assert "pipeline/__init__.py" in closure
    assert "pipeline/steps/neardup.py" in closure
    assert "pipeline/seeding.py" in closure  # through neardup
    assert "pipeline/stages/base.py" in closure
    assert not any(p.startswith("pipeline/model/") for p in closure)  # a data stage runs no model code


def test_data_steps_run_no_stage_model_or_report_code():
    """The layout's promise: a data step is pandas in, pandas out, whatever imports it."""
    for path in sorted((ROOT / PACKAGE / "steps").glob("*.py")):
        closure = relative(import_closure(f"{PACKAGE}.steps.{path.stem}"))
        outside = sorted(p for p in closure if p.startswith(("pipeline/stages/", "pipeline/model/", "pipeline/report/")))
        assert not outside, f"pipeline/steps/{path.name} imports {outside}"
