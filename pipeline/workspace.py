"""Run the pipeline on other corpora without touching this checkout: a workspace with a params overlay.

`make_workspace` copies the project's tracked files into a folder, merges a params overlay into
its `params.yaml` (the overlay's `datasets` replace the demo ones; other sections merge key by
key), rewrites source paths outside the project relative to the workspace (paths inside it refer
to the workspace's own copy), and starts a fresh git and DVC repository there. `dvc repro` in that folder is then the ordinary pipeline.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.params import Params, describe_errors

GIT_ENV = {
    "GIT_AUTHOR_NAME": "pipeline", "GIT_AUTHOR_EMAIL": "pipeline@localhost",
    "GIT_COMMITTER_NAME": "pipeline", "GIT_COMMITTER_EMAIL": "pipeline@localhost",
}
RUN_ENV = {"DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `overlay`: mappings merge key by key, other values (and `datasets`) replace."""
    out = dict(base)
    for key, value in overlay.items():
        if key != "datasets" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def overlay_params(project: Path, overlay: Path, workdir: Path) -> dict[str, Any]:
    """The project's params with `overlay` merged in and dataset sources re-rooted at `workdir`."""
    base = yaml.safe_load((project / "params.yaml").read_text())
    extra = yaml.safe_load(overlay.read_text()) or {}
    merged = merge(base, extra)
    for entry in merged.get("datasets", {}).values():
        if "://" not in str(entry["source"]):  # a URL is the same from anywhere
            entry["source"] = _reroot(Path(entry["source"]), project, workdir)
    try:
        Params.model_validate(merged)
    except Exception as exc:  # pydantic.ValidationError
        raise ParamsError(describe_errors(exc, overlay) if hasattr(exc, "errors") else str(exc)) from None
    return merged


def _reroot(source: Path, project: Path, workdir: Path) -> str:
    """A source as seen from the workspace: paths inside the project stay as they are (the
    workspace has its own copy, or makes it, like the demo corpora); paths outside it are
    rewritten relative to the workspace."""
    absolute = source if source.is_absolute() else (project / source).resolve()
    if absolute.is_relative_to(project.resolve()):
        return absolute.relative_to(project.resolve()).as_posix()
    return os.path.relpath(absolute, workdir.resolve())


def tracked_files(project: Path) -> list[str]:
    """Files git tracks in `project` (what a fresh clone would hold)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=project, capture_output=True, check=True)
    return sorted(p for p in out.stdout.decode().split("\0") if p)


def make_workspace(project: Path, overlay: Path, workdir: Path) -> Path:
    """Create `workdir` as a fresh git+DVC copy of `project` with the overlaid params; return it."""
    params = overlay_params(project, overlay, workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    evaluation_root = Path(params.get("decontaminate", {}).get("root", "data/eval")).as_posix().rstrip("/") + "/"
    for rel in tracked_files(project):
        if rel.startswith(("data/", "metrics/", "models/")) and not rel.startswith(evaluation_root) or rel == "dvc.lock":
            continue  # outputs of the demo run do not belong to another corpus (evaluation sets are inputs)
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, target)
    (workdir / "data").mkdir(exist_ok=True)
    (workdir / evaluation_root).mkdir(parents=True, exist_ok=True)  # dedup depends on it
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    venv = project / ".venv"
    if venv.exists():
        (workdir / ".venv").symlink_to(venv.resolve(), target_is_directory=True)
    _init_repo(workdir)
    return workdir


def _init_repo(workdir: Path) -> None:
    env = {**os.environ, **GIT_ENV, **RUN_ENV}
    (workdir / ".gitignore").write_text(((workdir / ".gitignore").read_text() if (workdir / ".gitignore").exists() else "") + ".venv\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "workspace"]):
        subprocess.run(cmd, cwd=workdir, env=env, check=True)


def repro(workdir: Path, dvc: str | None = None) -> int:
    """Run `dvc repro` in `workdir`; return its exit code.

    The dvc found from here must still be found from inside `workdir`, so a relative `workdir`
    (the README's `--dir build/real-data`) is made absolute first.
    """
    workdir = workdir.absolute()
    dvc = dvc or str(Path(os.environ.get("VIRTUAL_ENV", workdir / ".venv")) / "bin" / "dvc")
    if not Path(dvc).exists():
        dvc = shutil.which("dvc") or "dvc"
    return subprocess.run([dvc, "repro"], cwd=workdir, env={**os.environ, **RUN_ENV}).returncode
