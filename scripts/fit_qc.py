#!/usr/bin/env python
"""Fit the quality control's model on the validation fold: the anatomy reference from the training labels, the
predicted-Dice model and its flag threshold from validation predictions (and perturbed copies) with known Dice.

    python scripts/fit_qc.py [--cfg-path config/eval.yaml] [--copies 0.5] [--out PATH]

Writes ``qc_model.json`` beside the config's thresholds file (where predict.py and the submission run find it);
run it after ``scripts/tune_thresholds.py``. See :mod:`evaluator.qc.fitting`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluator.config import load_eval_config
from evaluator.qc.assess import qc_model_path
from evaluator.qc.fitting import fit_qc
from evaluator.qc.model import save_qc_model
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import ConfigError, cli_main


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--copies", type=float, default=0.5,
                   help="perturbed copies per validation image on average (default 0.5: every second image)")
    p.add_argument("--out", type=Path, default=None, help="default: qc_model.json beside the thresholds file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.copies < 0:
        p.error("--copies must be >= 0")
    return args


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_eval_config(args.cfg_path)
    out = args.out or qc_model_path(cfg)
    if out is None:
        raise ConfigError(args.cfg_path, "thresholds", "numbers, not a file: give --out for the QC model")
    model = fit_qc(cfg, file=args.cfg_path, copies=args.copies, progress=not args.quiet)
    save_qc_model(out, model)
    fit, dice = model.fit, model.dice
    weights = ", ".join(f"{f} {w:.3f}" for f, w in zip(dice.features, dice.weights))
    print(f"QC model: 1 - bone Dice = {dice.intercept:.4f} + {weights}; flag below {dice.flag_below:.4f}")
    print(f"fitted on {fit['n_images']} validation predictions ({fit['n_bones']} bones, true Dice "
          f"{fit['true_dice_range'][0]:.3f}-{fit['true_dice_range'][1]:.3f}) in {fit['seconds']:.0f} s: Spearman "
          f"{fit['spearman']:.2f}, mean abs error {fit['mean_abs_error']:.4f} on its own data")
    print(f"qc model -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
