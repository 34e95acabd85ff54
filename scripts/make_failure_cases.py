#!/usr/bin/env python
"""Write the phantom failure cases: small labelled test sets a model should not be trusted on (the test set of
the quality control, never training data), or reuse the ones made with the same parameters.

    python scripts/make_failure_cases.py --out data/phantom_failures [--persons 2] [--size 2048] [--seed 0]
                                         [--cases cut_fingers cast ...] [--preview] [--workers N]

One folder per case in the test layout (``<out>/<case>/test/DCM``, labels in ``<out>/<case>/test_labels``); see
:mod:`handseg.phantom.failures` for what each case draws.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from handseg.phantom.failure_set import failure_params, failure_sets_complete, generate_failure_cases
from handseg.phantom.failures import CASES
from handseg.runtime.cli import add_workers_argument, command_parser
from handseg.runtime.errors import cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per case)")
    p.add_argument("--persons", type=int, default=2, help="persons per case, two images each (default 2)")
    p.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="default: every case")
    p.add_argument("--preview", action="store_true", help="also write <out>/<case>/preview.png")
    add_workers_argument(p, os.cpu_count() or 1, "write the cases (default: one per core; the files do not "
                                                 "depend on it)")
    args = p.parse_args(argv)
    if args.persons < 1:
        p.error("--persons must be >= 1")
    if args.size < 64:
        p.error("--size must be at least 64")
    return args


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = failure_params(args.cases, args.persons, args.size, args.seed)
    if failure_sets_complete(args.out, params):
        print(f"failure cases already present, reusing them: {args.out}")
        return 0
    folders = generate_failure_cases(args.out, args.cases, args.persons, args.size, args.seed, args.preview,
                                     args.workers)
    for case, folder in folders.items():
        print(f"{case:12s} {2 * args.persons} images in {folder}: {CASES[case]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
