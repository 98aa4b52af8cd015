"""Demo: generate the offline demo corpora (a TSV of messages and a folder of shape images)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.demo import write_image_demo, write_text_demo
from pipeline.errors import UserError
from pipeline.params import load_params
from pipeline.stages.base import configure_logging, entry

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages.demo", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--params", default="params.yaml", type=Path)
    parser.add_argument("--text", required=True, type=Path, help="folder for the text demo (corpus.tsv)")
    parser.add_argument("--images", required=True, type=Path, help="folder for the image demo (<label>/<file>)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        params = load_params(args.params)
    except UserError as exc:
        log.error("demo failed: %s", exc)
        return exc.exit_code
    demo = params.demo
    write_text_demo(args.text, demo.text_records, params.seed)
    write_image_demo(args.images, demo.image_records, demo.image_size, params.seed)
    log.info("demo corpora written to %s and %s", args.text, args.images)
    return 0


if __name__ == "__main__":
    entry(__spec__.name, main)
