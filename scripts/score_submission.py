#!/usr/bin/env python
"""Score a submission CSV against held-out annotations, like the competition leaderboard.

    python scripts/score_submission.py --csv outputs/demo/submission.csv --labels data/phantom/test_labels

Every annotation JSON under ``--labels`` (e.g. ``test_labels/outputs_json/IDxxx/*.json``) is one test image.
Its polygons are rasterised at the image's own size and compared with the decoded RLE masks of the CSV:
Dice per image and class ``(2|P&G| + 1e-4) / (|P| + |G| + 1e-4)``, averaged over images per class, then over
classes. A (image, class) row missing from the CSV is an error, as on the leaderboard.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.classes import CLASSES
from handseg.format.metrics import dice_counts_rle, dice_from_counts, format_dice_table, summarize_dice
from handseg.format.rasterize import rasterize
from handseg.format.submission import read_submission
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import DataFormatError, cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--csv", type=Path, required=True, help="submission CSV (image_name,class,rle)")
    p.add_argument("--labels", type=Path, required=True, help="folder with the test annotation JSONs")
    p.add_argument("--out", type=Path, default=None, help="optional JSON file for the scores")
    return p.parse_args(argv)


def score(csv_path: Path, labels: Path) -> tuple[np.ndarray, list[str]]:
    """Per-image, per-class Dice (N, 29) float64 and the image names, in label-file order."""
    files = sorted(p for p in Path(labels).rglob("*.json") if not p.name.startswith("."))
    if not files:
        raise DataFormatError(labels, "no annotation JSON files found")
    rles = read_submission(csv_path)
    anns = [read_annotation(f) for f in files]
    names = [a.filename for a in anns]
    missing = [(n, c) for n in names for c in CLASSES if (n, c) not in rles]
    if missing:
        raise DataFormatError(csv_path, f"{len(missing)} (image, class) row(s) missing, first {missing[0]}")
    dice = np.zeros((len(files), len(CLASSES)))
    for i, ann in enumerate(anns):
        target = rasterize(polygons_in_order(ann), ann.hw)
        try:
            counts = dice_counts_rle([rles[(ann.filename, c)] for c in CLASSES], target)
        except ValueError as exc:
            raise DataFormatError(csv_path, f"{ann.filename}: bad RLE ({exc})") from None
        dice[i] = dice_from_counts(counts)
    return dice, names


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dice, names = score(args.csv, args.labels)
    summary = summarize_dice(dice)
    extra = {n for n, _ in read_submission(args.csv)} - set(names)
    print(format_dice_table(summary))
    print(f"\nmean Dice {summary.mean:.4f} over {summary.n_images} images and {len(CLASSES)} classes")
    if extra:
        print(f"note: {len(extra)} image(s) in the CSV have no annotation and were not scored")
    if args.out:
        result = {"mean": summary.mean, "per_class": summary.per_class, "n_images": summary.n_images,
                  "per_image": {n: dict(zip(CLASSES, map(float, d))) for n, d in zip(names, dice)}}
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"scores: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
