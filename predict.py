"""Predict the 29 bones of new hand X-rays with the evaluator's engine, thresholds and post-processing.

    python predict.py IMAGE_OR_FOLDER [--cfg-path config/eval.yaml] [--out DIR] [--masks npz]
                      [--pixel-spacing MM [MM]] [--backend eager|aoti|trt] [--no-qc]

Writes per image an overlay PNG with a legend, an annotation JSON in the training format (it opens in the
labelling tools and can be corrected and fed back as training data), optionally the (29, H, W) masks, and
``areas_mm2.csv`` when a pixel spacing is given, and ``qc.csv``: per image a predicted Dice, whether it is flagged for
review and why (the quality control, :mod:`evaluator.qc`). An unreadable image is reported on one line and skipped;
the exit status is 1 when any image failed. See :mod:`evaluator.predict`.
"""

from __future__ import annotations

import argparse
import sys

from evaluator.backends import BACKEND_CHOICES
from evaluator.config import load_eval_config
from evaluator.predict import MASK_FORMATS, input_images, load_predictor, output_stems, predict_paths
from handseg.format.areas import pixel_area_mm2
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("target", help="a PNG X-ray or a folder of them (searched recursively)")
    p.add_argument("--cfg-path", default="config/eval.yaml", help="evaluation config: checkpoint, engine, thresholds")
    p.add_argument("--out", default="outputs/predict", help="output folder (sub-folders of TARGET are kept)")
    p.add_argument("--masks", choices=MASK_FORMATS, default=None, help="also write the (29, H, W) masks")
    p.add_argument("--pixel-spacing", type=float, nargs="+", default=None, metavar="MM",
                   help="pixel spacing in mm (one number, or row and column): writes areas_mm2.csv")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None, help="override the config's backend")
    p.add_argument("--no-qc", action="store_true", help="no quality control (qc.csv, attributes.qc in the JSON)")
    args = p.parse_args(argv)
    if args.pixel_spacing is not None:
        try:
            pixel_area_mm2(args.pixel_spacing)
        except ValueError as exc:
            p.error(str(exc))
        args.pixel_spacing = args.pixel_spacing[0] if len(args.pixel_spacing) == 1 else args.pixel_spacing
    return args


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    root, images = input_images(args.target)
    output_stems(root, images, args.out)  # a missing target or colliding outputs fail before the engine loads
    cfg = load_eval_config(args.cfg_path, overrides={"backend": args.backend} if args.backend else None)
    predictor = load_predictor(cfg, file=args.cfg_path, qc=not args.no_qc)
    result = predict_paths(predictor, args.target, args.out, args.masks, args.pixel_spacing)
    done = len(result.written)
    print(f"predicted {done} image(s) into {args.out}" + (f"; areas in {result.areas_csv}" if result.areas_csv else ""))
    if result.qc_csv is not None:
        print(f"quality control: {len(result.flagged)} of {done} image(s) flagged for review ({result.qc_csv})")
    if result.failed:
        print(f"{len(result.failed)} of {done + len(result.failed)} image(s) could not be read (listed above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
