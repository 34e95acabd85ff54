#!/usr/bin/env python
"""QC report: how well the quality control predicts Dice and flags failures, where the true Dice is known.

    python scripts/qc_report.py [--cfg-path config/eval.yaml] [--labels DATA_ROOT/test_labels]
                                [--failures data/phantom_failures] [--per-image 2] [--harsh-per-image 1]
                                [--max-images N] [--cost-images 3] [--output-dir DIR] [--workers N]

On the test split (labels outside the layout), the test images perturbed as the robustness report perturbs
(its kinds and strengths from the eval config, ``--per-image`` per image, in turn), the test images under the
fit's harsher perturbations (``--harsh-per-image``) and every failure case under ``--failures``
(``scripts/make_failure_cases.py``). Prints the table, writes qc_report.{json,md,png} under
``<output_dir>/qc_report/`` and refreshes report.html. See :mod:`evaluator.qc.evaluation`. ``--workers 2`` on a
CPU shares the images between two processes (the cost is then measured alone, in this process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluator.config import load_eval_config
from evaluator.predict import load_predictor
from evaluator.qc.evaluation import (
    HARSH,
    assess_all,
    assess_all_in_workers,
    failure_images,
    measure_cost,
    perturbed,
    summarize,
    test_images,
)
from evaluator.qc.fitting import FIT_PERTURBATIONS
from evaluator.qc.report_files import format_qc_table, write_qc_report
from evaluator.report_html import print_written
from handseg.runtime.cli import add_workers_argument, command_parser
from handseg.runtime.errors import ConfigError, cli_main


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--labels", type=Path, default=None, help="test labels (default: <data_root>/test_labels)")
    p.add_argument("--failures", type=Path, default=None, help="failure cases, one sub-folder each")
    p.add_argument("--per-image", type=int, default=2, help="perturbed copies per test image (default 2)")
    p.add_argument("--harsh-per-image", type=int, default=1,
                   help="copies per test image under the fit's harsher perturbations (default 1)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N test images")
    p.add_argument("--cost-images", type=int, default=3, help="images timed with and without QC (default 3)")
    p.add_argument("--output-dir", type=Path, default=None, help="default: the config's output_dir")
    add_workers_argument(p, 1, "share the images (CPU: one per core helps; default 1, this process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_eval_config(args.cfg_path)
    predictor = load_predictor(cfg, file=args.cfg_path)
    if predictor.qc.model is None or predictor.qc.model.dice is None:
        raise ConfigError(args.cfg_path, "thresholds", "no QC model beside the thresholds file; run "
                                                       "scripts/fit_qc.py first")
    labels = args.labels or Path(cfg.data_root) / "test_labels"
    items = test_images(Path(cfg.data_root), labels)[: args.max_images]
    tests = list(items)
    items += perturbed(tests, cfg.robustness.perturbations(), args.per_image, cfg.robustness.seed)
    items += perturbed(tests, FIT_PERTURBATIONS, args.harsh_per_image, cfg.robustness.seed, HARSH)
    failures = sorted(p for p in args.failures.iterdir() if (p / "test").is_dir()) if args.failures else []
    for folder in failures:
        items += failure_images(folder)
    if args.workers > 1:
        records = assess_all_in_workers(cfg, args.cfg_path, items, args.workers, progress=not args.quiet)
    else:
        records = assess_all(predictor, predictor.qc, items, progress=not args.quiet)
    cost_paths = [i.image_path for i in items if i.set == "test"][: args.cost_images]
    summary = summarize(records, measure_cost(predictor, predictor.qc, cost_paths) if cost_paths else None)
    out_dir = Path(args.output_dir or cfg.output_dir)
    settings = {"checkpoint": str(predictor.qc.model.fit.get("checkpoint")), "qc_model": str(predictor.qc.source),
                "flag_below": predictor.qc.model.dice.flag_below, "labels": str(labels), "per_image": args.per_image,
                "failures": str(args.failures) if args.failures else None}
    paths = write_qc_report(out_dir / "qc_report", records, summary, settings)
    print(format_qc_table(summary))
    print_written(paths, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
