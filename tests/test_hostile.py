"""Hostile paths: no stage reads outside its dataset root, writes outside its declared outputs, or
hands a file name to a shell.

The reads are observed, not inferred from the ledger: clean and normalise run in a subprocess
under `strace` (every open, openat and openat2 of every thread and child, with the kernel's own
path of each opened descriptor) and with a Python audit hook (opens, folder listings, process
launches), and no opened path may resolve into a `secret` folder beside the root that the
hostile entries point at. Where strace cannot trace, the audit hook alone answers.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from conftest import ROOT, write_params
from pipeline.io import read_records
from pipeline.stages import augment, clean, dedup, embed, label_issues, normalise, prepare, rebalance, semantic, split
from pipeline.stages.base import stage_environment
from test_stages import DATASETS, SECTIONS, write_corpus, write_images

# Names a shell, a glob, an option parser, a CSV writer or a line-based log would each misread.
ODD_NAMES = [
    "new\nline.png", "car\rriage.png", "tab\tname.png", 'dq"uote.png', "sq'uote.png", "sp ace.png",
    "$(touch PWNED).png", "`touch PWNED`.png", "semi;colon.png", "pi|pe.png", "st*ar.png", "-rf.png",
    "--help.png", "ünï cödé.png", "back\\slash.png",
]
UNDECODABLE = b"latin\xe9.png"  # a Latin-1 name: not UTF-8, so no record can hold it
LOOP, FIFO, LINK, REL_LINK = "loop.png", "fifo.png", "link.png", "rel-link.png"


def png(seed: int) -> bytes:
    """A 32x32 noise PNG, different per seed, that passes clean and normalise."""
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# --- the hostile tree -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tree:
    """Where things are: the stages run in `ws`; `secret` and `elsewhere` sit beside it."""

    base: Path
    ws: Path
    secret: Path
    elsewhere: Path


def build_tree(base: Path) -> Tree:
    """The secret, an allowed folder outside the root, and the workspace with three datasets."""
    base = Path(os.path.realpath(base))
    tree = Tree(base, base / "ws", base / "secret", base / "elsewhere")
    for folder in (tree.secret, tree.elsewhere, tree.ws):
        folder.mkdir()
    (tree.secret / "secret.png").write_bytes(png(999))
    (tree.secret / "passwd").write_text("root:x:0:0\n")
    (tree.elsewhere / "allowed.png").write_bytes(png(998))
    (tree.elsewhere / LINK).symlink_to(tree.secret / "secret.png")
    _hostile_folder(tree, tree.ws / "root")
    _hostile_folder(tree, tree.ws / "images")
    (tree.ws / "images" / "bird").symlink_to(tree.secret, target_is_directory=True)  # a label folder
    (tree.ws / "root" / "linked").symlink_to(tree.secret, target_is_directory=True)
    (tree.ws / "root" / "manifest.csv").write_bytes(manifest(MANIFEST))
    (tree.ws / "root" / "absolute.csv").write_bytes(manifest(absolute_rows(tree)))
    return tree


def _hostile_folder(tree: Tree, root: Path) -> None:
    """root/cat and root/dog holding every odd name, and links, a loop and a pipe in cat."""
    for k, label in enumerate(("cat", "dog")):
        (root / label).mkdir(parents=True)
        for i, name in enumerate(ODD_NAMES):
            (root / label / name).write_bytes(png(100 * k + i))
    cat = root / "cat"
    (cat / LINK).symlink_to(tree.secret / "secret.png")
    (cat / REL_LINK).symlink_to(os.path.relpath(tree.secret / "secret.png", cat))
    (cat / "linked").symlink_to(tree.secret, target_is_directory=True)
    (cat / LOOP).symlink_to(LOOP)
    os.mkfifo(cat / FIFO)  # opening it to read would block forever
    with open(os.fsencode(cat) + b"/" + UNDECODABLE, "wb") as handle:
        handle.write(png(77))


# Manifest rows (path bytes, expected rejection or None for read); labels are all "cat".
MANIFEST: list[tuple[bytes, str | None]] = [
    *[(f"cat/{name}".encode(), None) for name in ODD_NAMES if "\\" not in name],
    *[(f"dog/{name}".encode(), None) for name in ODD_NAMES if "\\" not in name],
    (b"cat/back\\slash.png", "missing_file"),  # a backslash separates, as in a Windows manifest
    (b"../../secret/secret.png", "outside_root"),
    (b"cat/../../../secret/secret.png", "outside_root"),
    (b"..\\..\\secret\\secret.png", "outside_root"),
    (f"cat/{LINK}".encode(), "outside_root"),
    (f"cat/{REL_LINK}".encode(), "outside_root"),
    (b"linked/secret.png", "outside_root"),
    (b"cat/linked/secret.png", "outside_root"),
    (b"cat/*.png", "missing_file"),  # not a glob
    (f"cat/{LOOP}".encode(), "missing_file"),
    (f"cat/{FIFO}".encode(), "missing_file"),
    (b"cat/" + b"x" * 300 + b".png", "missing_file"),  # a name the system refuses
    (b"cat/" + UNDECODABLE, "invalid_encoding"),
    (b"cat/nul\x00byte.png", "nul_byte"),
    (b"", "missing_path"),
]


def absolute_rows(tree: Tree) -> list[tuple[bytes, str | None]]:
    """Rows of a manifest read with allow_absolute_paths: true."""
    return [
        (os.fsencode(tree.elsewhere / "allowed.png"), None),
        (os.fsencode(tree.secret / "passwd"), "not_an_image_file"),
        (os.fsencode(tree.elsewhere / LINK), "outside_root"),
        (os.fsencode(tree.ws / "root" / "cat" / LINK), "outside_root"),
        (b"../../secret/secret.png", "outside_root"),
        (b"cat/sp ace.png", None),
    ]


def manifest(rows: list[tuple[bytes, str | None]]) -> bytes:
    """A CSV manifest of `rows`, every field quoted (so newlines and quotes stay in their field)."""
    quoted = [b'"' + path.replace(b'"', b'""') + b'",cat\n' for path, _ in rows]
    return b"path,label\n" + b"".join(quoted)


HOSTILE_DATASETS = {
    "man": {"modality": "image", "source": "root/manifest.csv", "format": "image_manifest", "labels": ["cat", "dog"]},
    "fold": {"modality": "image", "source": "images", "format": "image_folder", "labels": ["cat", "dog"]},
    "abs": {"modality": "image", "source": "root/absolute.csv", "format": "image_manifest", "labels": ["cat", "dog"],
            "allow_absolute_paths": True},
}


def folder_expected() -> tuple[set[str], Counter]:
    """The image folder's sources read, and its rejections counted by reason."""
    read = {f"{label}/{name}" for label in ("cat", "dog") for name in ODD_NAMES}
    rejected = Counter({"outside_root": 4, "missing_file": 2, "invalid_encoding": 1})  # link, rel-link, linked, bird
    return read, rejected


# --- the stages as dvc.yaml runs them -------------------------------------------------------

def dvc_stage(stage: str, key: str) -> tuple[list[str], set[str]]:
    """The arguments dvc.yaml's `stage` passes for dataset `key`, and the paths it declares the
    stage writes: its outs, metrics and plots, and its --metrics and --timings files."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["do"]
    argv = shlex.split(spec["cmd"].replace("${key}", key))
    argv = argv[argv.index("-m") + 2:]
    declared = {(o if isinstance(o, str) else next(iter(o))).replace("${key}", key)
                for kind in ("outs", "metrics", "plots") for o in spec.get(kind, [])}
    declared |= {argv[i + 1] for i, arg in enumerate(argv) if arg in ("--metrics", "--timings")}
    return argv, declared


# --- observing a stage process --------------------------------------------------------------

WRAPPER = r'''
"""Run stage mains in order, recording every open, listing and process launch an audit hook sees."""
import importlib, json, os, sys

log = open(sys.argv[1], "w", encoding="utf-8")
WATCHED = {"open", "os.scandir", "os.listdir", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
           "os.spawn", "pty.spawn"}


def hook(event, args):
    if event in WATCHED:
        path = args[0] if event != "os.spawn" else args[1]
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, (str, bytes)):
            path = os.path.abspath(os.fsdecode(path))
            mode = args[1] if event == "open" and isinstance(args[1], str) else ""
            flags = args[2] if event == "open" and isinstance(args[2], int) else 0
            log.write(json.dumps([event, path, mode, flags]) + "\n")


sys.addaudithook(hook)
codes = [importlib.import_module(module).main(argv) for module, argv in json.loads(sys.argv[2])]
log.flush()
print(json.dumps(codes))
'''

HEX = r"((?:\\x[0-9a-f]{2})*)"
OPEN_CALL = re.compile(rf'open(?:at2?)?\((?:(?:AT_FDCWD|-?\d+)<{HEX}>, )?"{HEX}", (?:\{{flags=)?([A-Z0-9_|]+)')
OPEN_RESULT = re.compile(rf"\) += \d+<{HEX}>")
ANY_OPEN = re.compile(r"\bopen(?:at2?)?\(")
EXEC_CALL = re.compile(rf'execve\("{HEX}"')
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT")
STRACE = ["strace", "-f", "-y", "-xx", "-s", "65535", "-e", "trace=open,openat,openat2,execve"]  # -y -xx: paths in hex


def _unhex(text: str) -> str:
    return os.fsdecode(bytes.fromhex(text.replace("\\x", "")))


@dataclass(slots=True)
class Opened:
    """One open the process asked for: the path (made absolute), the path the kernel opened, if
    it did (strace only), whether for writing, and who saw it."""

    path: str
    kernel: str | None
    writes: bool
    seen_by: str


@dataclass(slots=True)
class Trace:
    """What a traced process did: its stages' exit codes, its opens, the programs it executed."""

    codes: list[int]
    private: Path  # its own home and temporary folder, and the tracer's logs
    opened: list[Opened] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    strace: bool = False


@cache
def strace_works() -> bool:
    """Whether strace is installed and may trace here (ptrace can be forbidden in a container)."""
    if shutil.which("strace") is None:
        return False
    probe = subprocess.run(["strace", "-f", "-o", os.devnull, "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def run_traced(runs: list[tuple[str, list[str]]], cwd: Path, logs: Path) -> Trace:
    """Run each (module, argv) stage main in one subprocess in `cwd`, under strace where it works."""
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "wrapper.py").write_text(WRAPPER)
    command = [sys.executable, str(logs / "wrapper.py"), str(logs / "audit.jsonl"), json.dumps(runs)]
    if strace_works():
        command = [*STRACE, "-o", str(logs / "strace.txt"), *command]
    (logs / "home").mkdir(exist_ok=True)
    private = {"HOME": str(logs / "home"), "TMPDIR": str(logs / "home"), "XDG_CACHE_HOME": str(logs / "home")}
    env = stage_environment({**os.environ, **private, "PYTHONPATH": str(ROOT)})
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    trace = Trace(json.loads(done.stdout.splitlines()[-1]), logs, strace=strace_works())
    assert set(trace.codes) == {0}, done.stderr[-4000:]
    _read_audit(logs / "audit.jsonl", trace)
    if trace.strace:
        _read_strace(logs / "strace.txt", cwd, trace)
    return trace


def _read_audit(log: Path, trace: Trace) -> None:
    for line in log.read_text(encoding="utf-8").splitlines():
        event, path, mode, flags = json.loads(line)
        if event in ("open", "os.scandir", "os.listdir"):
            writes = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            trace.opened.append(Opened(path, None, writes, "audit hook"))
        else:
            trace.executed.append(path)


def _read_strace(log: Path, cwd: Path, trace: Trace) -> None:
    executed = []
    for line in log.read_text().splitlines():
        assert OPEN_CALL.search(line) or not ANY_OPEN.search(line), f"an open this test cannot parse: {line}"
        if (call := OPEN_CALL.search(line)) is not None:
            folder, path, flags = call.groups()
            result = OPEN_RESULT.search(line)
            trace.opened.append(Opened(os.path.join(_unhex(folder) if folder else str(cwd), _unhex(path)),
                                       _unhex(result.group(1)) if result else None,
                                       any(flag in flags.split("|") for flag in WRITE_FLAGS), "strace"))
        elif (call := EXEC_CALL.search(line)) is not None:
            executed.append(_unhex(call.group(1)))
    trace.executed += executed[1:]  # the first is strace's own launch of the interpreter


def within(path: str, folder: Path) -> bool:
    """Whether `path`, its links followed, is `folder` or inside it."""
    real = Path(os.path.realpath(path))
    return real == folder or real.is_relative_to(folder)


def secret_opens(trace: Trace, secret: Path) -> list[Opened]:
    """Every open of the trace that reached into `secret`, by the path asked for or the one opened."""
    return [o for o in trace.opened if within(o.path, secret) or (o.kernel is not None and within(o.kernel, secret))]


# --- 1. nothing outside the root is opened ---------------------------------------------------

@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Tree, Trace]:
    """clean then normalise of the three hostile datasets, in one traced stage process."""
    tree = build_tree(tmp_path_factory.mktemp("hostile"))
    write_params(tree.ws / "params.yaml", HOSTILE_DATASETS, **SECTIONS)
    runs = [(f"pipeline.stages.{stage}", dvc_stage(stage, key)[0])
            for key in HOSTILE_DATASETS for stage in ("clean", "normalise")]
    return tree, run_traced(runs, tree.ws, tmp_path_factory.mktemp("logs"))


def test_stages_succeed_and_the_tracer_sees_the_images_they_read(hostile):
    """Every stage exits 0, and the observers are not blind: each saw an odd-named image of the
    root opened (strace also the Parquet shards that pyarrow opens in C++)."""
    tree, trace = hostile
    assert trace.codes == [0] * 6
    for seen_by in {"audit hook"} | ({"strace"} if trace.strace else set()):
        paths = {o.path for o in trace.opened if o.seen_by == seen_by}
        assert str(tree.ws / "root" / "cat" / "$(touch PWNED).png") in paths, seen_by
        assert str(tree.ws / "images" / "dog" / "new\nline.png") in paths, seen_by
    if trace.strace:
        assert any(o.seen_by == "strace" and o.path.endswith(".parquet") and "/clean.parquet/" in o.path
                   for o in trace.opened)


def test_nothing_in_the_secret_folder_is_ever_opened(hostile):
    """No open, read or listing of clean or normalise reaches the secret folder that the `..`,
    absolute and linked entries and the symlinked folders point at."""
    tree, trace = hostile
    assert secret_opens(trace, tree.secret) == []


def test_the_observers_catch_a_read_of_the_secret(tmp_path):
    """The same tracing flags a process that does read the secret: the check above can fail."""
    tree = Tree(tmp_path, tmp_path / "ws", tmp_path / "secret", tmp_path / "elsewhere")
    tree.secret.mkdir()
    tree.ws.mkdir()
    (tree.secret / "secret.png").write_bytes(b"x")
    (tree.ws / "peek.png").symlink_to(tree.secret / "secret.png")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "peek.py").write_text("def main(argv):\n    open(argv[0], 'rb').read()\n    return 0\n")
    trace = run_traced([("peek", ["peek.png"])], tree.ws, tmp_path / "logs")
    seen_by = {o.seen_by for o in secret_opens(trace, tree.secret)}
    assert seen_by == ({"audit hook", "strace"} if trace.strace else {"audit hook"})


def _ledger(tree: Tree, key: str, stage: str = "clean") -> Counter:
    """The stage's drop reasons counted, each drop with a detail."""
    ledger = pq.read_table(tree.ws / "data" / key / "ledger" / f"{stage}.parquet").to_pandas()
    assert ledger["detail"].notna().all()
    return Counter(ledger.loc[ledger["fate"] == "dropped", "reason"])


def _read_sources(tree: Tree, key: str, stage: str = "clean") -> set[str]:
    """The sources of the records the stage wrote."""
    return set(read_records(tree.ws / "data" / key / f"{stage}.parquet")["source"])


def test_manifest_entries_are_refused_with_a_reason_or_read(hostile):
    """`..`, backslashed `..`, links and linked folders leaving the root, an absolute path, a glob,
    a loop, a pipe, an over-long, an undecodable and a NUL name: each one ledger rejection; the odd
    names are read, and survive normalise."""
    tree, _ = hostile
    assert _ledger(tree, "man") == Counter(reason for _, reason in MANIFEST if reason)
    read = {path.decode() for path, reason in MANIFEST if reason is None}
    assert _read_sources(tree, "man") == read
    assert _read_sources(tree, "man", "normalise") == read


def test_absolute_paths_allowed_still_refuse_links_out_and_non_images(hostile):
    """allow_absolute_paths: true reads the absolute image named, but not a non-image file, not an
    absolute link leaving its folder, and still not a relative `..`."""
    tree, _ = hostile
    rows = absolute_rows(tree)
    assert _ledger(tree, "abs") == Counter(reason for _, reason in rows if reason)
    assert _read_sources(tree, "abs") == {os.fsdecode(path) for path, reason in rows if reason is None}


def test_image_folder_links_out_are_refused_and_odd_names_read(hostile):
    """In root/<label>/<file>: file links, folder links (a label folder too) leaving the root,
    a loop, a pipe and an undecodable name are each a rejection; every odd name is read."""
    tree, _ = hostile
    read, rejected = folder_expected()
    assert _ledger(tree, "fold") == rejected
    assert _read_sources(tree, "fold") == read
    assert _read_sources(tree, "fold", "normalise") == read


def test_an_undecodable_name_is_named_in_the_ledger_with_its_bytes_escaped(hostile):
    """A Latin-1 file name is refused as invalid_encoding, shown with its byte escaped, not a crash."""
    tree, _ = hostile
    ledger = pq.read_table(tree.ws / "data" / "fold" / "ledger" / "clean.parquet").to_pandas()
    detail = ledger.loc[ledger["reason"] == "invalid_encoding", "detail"].tolist()
    assert detail == ["cat/latin\\xe9.png: file name is not valid UTF-8"]


def test_clean_and_normalise_write_only_their_declared_outputs(hostile):
    """Every file opened for writing anywhere, even one removed again, is one of the stage's
    declared outputs, the atomic temporary beside one, or its scratch folder; only devices (a
    semaphore in /dev/shm) and the process's own home and temporary folder are left aside."""
    tree, trace = hostile
    declared = [tree.ws / p for key in HOSTILE_DATASETS for s in ("clean", "normalise") for p in dvc_stage(s, key)[1]]
    writes = {o.path for o in trace.opened if o.writes and not o.path.startswith(("/dev/", f"{trace.private}/"))}
    assert any(p.endswith("clean.json.tmp") for p in writes), "no write observed: the observers are blind"
    assert [p for p in writes if not any(_written_for(Path(p), out) for out in declared)] == []


def _written_for(path: Path, out: Path) -> bool:
    """Whether writing `path` is writing `out`: it, inside it, its atomic temporary (`.name.*`
    beside it), or a stage's scratch folder beside it."""
    if path == out or path.is_relative_to(out):
        return True
    first = path.relative_to(out.parent).parts[:1] if path.is_relative_to(out.parent) else ()
    return bool(first) and first[0].startswith((f".{out.name}.", ".clean-scratch-", ".normalise-scratch-"))


# --- 2. no stage writes outside its declared outputs ----------------------------------------

Snapshot = dict[str, tuple[int, ...]]


def snapshot(root: Path) -> Snapshot:
    """(size, mtime in ns, inode) of every file or link under `root`, and () for each folder (whose
    mtime moves whenever an entry is added): links are not followed."""
    found: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(path := os.path.join(folder, name))
            found[path] = () if stat.S_ISDIR(st.st_mode) else (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def changed(before: Snapshot, after: Snapshot) -> list[Path]:
    """Files created, modified, replaced or removed, and folders created or removed."""
    return sorted(Path(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p))


STAGE_MODULES = {"clean": clean, "normalise": normalise, "dedup": dedup, "embed": embed, "semantic": semantic, "label_issues": label_issues,
                 "split": split, "prepare": prepare, "augment": augment, "rebalance": rebalance}


@pytest.mark.parametrize("key", ["t", "im"])
def test_each_data_stage_writes_only_its_declared_outputs(tmp_path, monkeypatch, key):
    """The data stages (and embed, semantic and label_issues, whose outputs split reads), run with dvc.yaml's arguments in a workspace whose path holds shell
    syntax: every file or folder created, changed or removed under tmp_path is one dvc.yaml
    declares for that stage (or a folder on the way to one), and no scratch folder is left."""
    ws = tmp_path / "w s;$(touch PWNED)`touch PWNED`"
    ws.mkdir()
    write_corpus(ws)
    write_images(ws)
    write_params(ws / "params.yaml", DATASETS, **SECTIONS)
    monkeypatch.chdir(ws)
    for stage, module in STAGE_MODULES.items():
        argv, declared = dvc_stage(stage, key)
        before = snapshot(tmp_path)
        assert module.main(argv) == 0, stage
        outs = [ws / p for p in declared]
        stray = [p for p in changed(before, snapshot(tmp_path))
                 if not any(p == out or p.is_relative_to(out) or out.is_relative_to(p) for out in outs)]
        assert stray == [], f"{stage} wrote outside its declared outputs"
    assert not [p for p in tmp_path.rglob("*") if "-scratch-" in p.name or p.name.endswith(".tmp")]
    assert not [p for p in tmp_path.rglob("*PWNED") if p.name == "PWNED"]


# --- 3. user data never reaches a shell -----------------------------------------------------

SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
               "asyncio.create_subprocess_shell", "pty.spawn", "commands.getoutput"}


def shell_calls(source: str, name: str) -> list[str]:
    """`file:line: call` of each call in `source` that runs a shell: os.system and its kin, or
    anything given shell= other than a literal False. Imported names are followed (`from os
    import system as run` makes `run(...)` os.system)."""
    tree = ast.parse(source, filename=name)
    aliases = _import_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = _dotted(node.func, aliases)
        shell = [k for k in node.keywords if k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)]
        if called in SHELL_CALLS or shell:
            found.append(f"{name}:{node.lineno}: {called or ast.unparse(node.func)}")
    return found


def _import_aliases(tree: ast.AST) -> dict[str, str]:
    """Each name an import binds -> the dotted name it stands for (`sp` -> `subprocess`)."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                bound = a.asname or a.name.split(".")[0]
                aliases[bound] = a.name if a.asname else bound
        elif isinstance(node, ast.ImportFrom) and node.module:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return aliases


def _dotted(func: ast.expr, aliases: dict[str, str]) -> str | None:
    """The dotted name a call's function spells, with its first part's import followed."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    return ".".join([aliases.get(func.id, func.id), *reversed(parts)])


def test_the_shell_scan_finds_every_form_of_shell_call():
    """The scan is not vacuous: each way of reaching a shell in this sample is found, and the
    safe forms are not."""
    sample = (
        "import os, subprocess as sp\nfrom os import system as run, popen\nimport asyncio\n"
        "os.system('x')\nrun('x')\npopen('x')\nsp.run('x', shell=True)\nsp.Popen(cmd, shell=flag)\n"
        "sp.getoutput('x')\nasyncio.create_subprocess_shell('x')\n"
        "sp.run(['ls', name])\nsp.run(['ls'], shell=False)\nos.execve(exe, [exe], env)\n"
    )
    assert [hit.split(":")[1] for hit in shell_calls(sample, "s.py")] == ["4", "5", "6", "7", "8", "9", "10"]


def test_no_pipeline_code_runs_a_shell():
    """No module of pipeline/ calls os.system, os.popen, a shell= subprocess or their kin."""
    hits = [hit for path in sorted((ROOT / "pipeline").rglob("*.py"))
            for hit in shell_calls(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert hits == []


def test_odd_names_flow_through_clean_and_normalise_without_running_anything(hostile):
    """Names holding `$(...)`, backticks, `;` and `|` are read as data: no PWNED file appears, and
    the stage process launched no program at all (no shell, no subprocess)."""
    tree, trace = hostile
    assert not [p for p in tree.base.rglob("*PWNED") if p.name == "PWNED"]
    assert not Path("PWNED").exists() and not (ROOT / "PWNED").exists()
    assert trace.executed == []


# --- the same, through the real entry point (slow: a process per stage) ---------------------

@pytest.mark.slow
@pytest.mark.parametrize("key", list(HOSTILE_DATASETS))
def test_stage_scripts_as_dvc_runs_them_open_nothing_in_the_secret(tmp_path, key):
    """`python -m pipeline.stages.clean` (and normalise), re-executing itself into the stage
    environment as under dvc, under strace: nothing opened in the secret, nothing executed but
    the interpreter."""
    if not strace_works():
        pytest.skip("strace is not installed or may not trace here; the audit-hook test covers the reads")
    tree = build_tree(tmp_path)
    write_params(tree.ws / "params.yaml", HOSTILE_DATASETS, **SECTIONS)
    for stage in ("clean", "normalise"):
        log = tmp_path / f"{stage}.strace"
        command = [*STRACE, "-o", str(log), sys.executable, "-m", f"pipeline.stages.{stage}", *dvc_stage(stage, key)[0]]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"} | {"PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, cwd=tree.ws, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        trace = Trace([done.returncode], tmp_path, strace=True)
        _read_strace(log, tree.ws, trace)
        read_from = tree.ws / ("data" if stage == "normalise" else "images" if key == "fold" else "root")
        assert any(within(o.path, read_from) and not o.writes for o in trace.opened), "the tracer saw no read"
        assert secret_opens(trace, tree.secret) == []
        assert {Path(p).name for p in trace.executed} <= {Path(sys.executable).name}
