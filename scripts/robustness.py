#!/usr/bin/env python
"""Robustness report: the deployed engine's mean Dice on the validation fold under controlled perturbations.

    python scripts/robustness.py --cfg-path config/eval.yaml [--output-dir DIR] [--max-images N] [--workers N]

Rotation, zoom, translation (labels moved with the image), gamma, contrast, Gaussian noise, blur and JPEG
quality, each at the strengths under ``robustness:`` in the eval config. Writes robustness.json, robustness.md
and robustness.png under ``<output_dir>/robustness/`` and prints the table. ``--workers 2`` on a CPU shares the
images between two processes of one torch thread each (about 1.2x as fast on 2 cores; the same rows).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from evaluator.config import load_eval_config
from evaluator.report_html import print_written
from evaluator.robustness import evaluate_robustness, format_robustness_table
from handseg.runtime.cli import add_workers_argument, command_parser
from handseg.runtime.errors import cli_main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/eval.yaml", help="eval config (checkpoint, engine, data, robustness)")
    p.add_argument("--output-dir", default=None, help="write under DIR/robustness instead of the config's output_dir")
    p.add_argument("--max-images", type=int, default=None, help="only the first N validation images")
    add_workers_argument(p, 1, "share the images (CPU: one per core helps; default 1, this process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides: dict = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.max_images is not None:
        overrides["robustness"] = {"max_images": args.max_images}
    cfg = load_eval_config(args.cfg_path, overrides=overrides)
    result, paths = evaluate_robustness(cfg, file=args.cfg_path, progress=not args.quiet, workers=args.workers)
    print(format_robustness_table(result))
    print_written(paths, cfg.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
