"""The `pipeline` command: what the pipeline holds, and running it on other corpora.

  pipeline info                          stages of dvc.yaml and datasets of params.yaml
  pipeline workspace OVERLAY --dir DIR   a fresh git+DVC copy of the project with a params
                                         overlay (e.g. overlays/real-data.yaml), then dvc repro
  pipeline diff BASE [TARGET]            data diff of the final datasets (Markdown), with the
                                         gate on changed test records; TARGET defaults to the
                                         workspace
  pipeline calibrate PAIRS               precision and recall of the configured text near-
                                         duplicate settings on labelled pairs (CSV/TSV/JSON
                                         lines: text_a, text_b, is_duplicate), and the bands x
                                         rows to use for a target precision
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from pipeline.errors import UserError
from pipeline.params import load_params
from pipeline.stages.base import configure_logging

log = logging.getLogger("pipeline")


def info(project: Path) -> int:
    """Print the stages (with their per-dataset instances) and the datasets."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    params = load_params(project / "params.yaml")
    print("stages (python -m pipeline.stages.<stage> --help):")
    for name, stage in stages.items():
        scope = "per dataset" if "foreach" in stage else "once"
        print(f"  {name:<10} {scope}")
    print("datasets (params.yaml):")
    for name, dataset in params.datasets.items():
        print(f"  {name:<14} {dataset.modality:<6} {dataset.format:<15} {dataset.source}")
    return 0


def workspace(project: Path, overlay: Path, workdir: Path, run: bool) -> int:
    """Build the overlay workspace and (unless told not to) reproduce the pipeline in it."""
    from pipeline.workspace import make_workspace, repro

    made = make_workspace(project, overlay, workdir)
    log.info("workspace ready at %s", made)
    if not run:
        return 0
    code = repro(made)
    log.info("dvc repro in %s exited %d; metrics are in %s", made, code, made / "metrics")
    return code


def data_diff(project: Path, base: str, target: str, datasets: list[str] | None, output: Path | None) -> int:
    """Print (or write) the Markdown diff; exit 1 when the test-change gate is violated."""
    from pipeline.diff import Version, diff_dataset, markdown, violated

    params = load_params(project / "params.yaml")
    names = datasets or list(params.datasets)
    gate = params.gates.max_test_changed_fraction
    old, new = Version(project, base), Version(project, target)
    diffs = [diff_dataset(name, old, new) for name in names]
    text = markdown(diffs, base, target, gate)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        print(text)
    failed = violated(diffs, gate)
    if failed and not params.gates.warn_only:
        log.error("gate max_test_changed_fraction (%s) violated for: %s", gate, ", ".join(failed))
        return 1
    return 0


def calibrate_pairs(project: Path, pairs: Path, target_precision: float) -> int:
    """Score the configured MinHash settings on labelled pairs, normalised as the pipeline would."""
    import pandas as pd

    from pipeline.steps.neardup import NearDupSettings, calibrate
    from pipeline.steps.normalise import normalise_text

    params = load_params(project / "params.yaml")
    if pairs.suffix == ".jsonl":
        frame = pd.read_json(pairs, lines=True)
    else:
        frame = pd.read_csv(pairs, sep="\t" if pairs.suffix == ".tsv" else ",", dtype={"text_a": str, "text_b": str})
    missing = {"text_a", "text_b", "is_duplicate"} - set(frame.columns)
    if missing:
        log.error("%s: columns %s missing (need text_a, text_b, is_duplicate)", pairs, sorted(missing))
        return 2
    norm = params.normalise.text
    truth = frame["is_duplicate"].astype(str).str.strip().str.lower().isin(["1", "true", "yes", "y"])
    labelled = [(normalise_text(str(a), norm), normalise_text(str(b), norm), bool(t))
                for a, b, t in zip(frame["text_a"], frame["text_b"], truth)]
    print(json.dumps(calibrate(labelled, NearDupSettings.from_params(params.dedup.text), target_precision=target_precision), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--project", type=Path, default=Path("."), help="project root (default: .)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="list stages and datasets")
    ws = sub.add_parser("workspace", help="run the pipeline with a params overlay in a separate folder")
    ws.add_argument("overlay", type=Path, help="YAML whose sections override params.yaml (datasets replace)")
    ws.add_argument("--dir", type=Path, required=True, help="workspace folder (replaced if it exists)")
    ws.add_argument("--no-repro", action="store_true", help="only prepare the workspace")
    df = sub.add_parser("diff", help="data diff of the final datasets between two versions")
    df.add_argument("base", help="git revision to compare against (e.g. main, HEAD~1)")
    df.add_argument("target", nargs="?", default="workspace", help="git revision, or 'workspace' (default)")
    df.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    df.add_argument("--output", type=Path, help="write the Markdown here instead of printing it")
    cal = sub.add_parser("calibrate", help="precision/recall of the text near-duplicate settings on labelled pairs")
    cal.add_argument("pairs", type=Path, help="CSV, TSV or JSON lines with text_a, text_b, is_duplicate")
    cal.add_argument("--target-precision", type=float, default=0.98)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        if args.command == "workspace":
            return workspace(args.project, args.overlay, args.dir, not args.no_repro)
        if args.command == "diff":
            return data_diff(args.project, args.base, args.target, args.dataset, args.output)
        if args.command == "calibrate":
            return calibrate_pairs(args.project, args.pairs, args.target_precision)
        return info(args.project)
    except (UserError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
