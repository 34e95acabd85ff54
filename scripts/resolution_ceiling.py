#!/usr/bin/env python
"""Upper bound of mean Dice for a model whose logits live on an s x s grid (e.g. 96 for SegFormer at 384 px).

    python scripts/resolution_ceiling.py --data data/phantom --sizes 96 128 192 256 512 [--max-images 8]

Each validation mask is area-downsampled to s x s (the best a perfect model at that logit resolution can
predict), upsampled back bilinearly to the image size, thresholded at 0.5 and scored against the native mask
with the competition Dice. Tells whether a low-resolution stage is limited by its resolution or by learning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from handseg.data.dataset_index import assign_folds, index_split, split_fold
from handseg.data.image_io import read_image
from handseg.format.classes import CLASSES
from handseg.format.markdown import markdown_table
from handseg.format.metrics import dice_counts, dice_from_counts
from handseg.inference.scoring import ground_truth
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--data", type=Path, default=Path("data/phantom"), help="data root (competition layout)")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 192, 256, 512], help="logit grid sides")
    p.add_argument("--fold", type=int, default=0, help="validation fold (as in the training configs)")
    p.add_argument("--n-folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=None, help="only the first N validation images")
    return p.parse_args(argv)


def ceiling_counts(masks: np.ndarray, side: int) -> np.ndarray:
    """Dice counts (29, 3) of ``masks`` (29, H, W) {0, 1} after a round trip through a ``side`` x ``side`` grid."""
    target = torch.from_numpy(np.ascontiguousarray(masks))
    small = F.interpolate(target[None].float(), size=(side, side), mode="area")
    back = F.interpolate(small, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=False)[0]
    return dice_counts(back > 0.5, target)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    samples = index_split(args.data, "train")
    _, val = split_fold(samples, assign_folds(samples, n_folds=args.n_folds, seed=args.seed), args.fold)
    val = val[: args.max_images] if args.max_images else val
    counts = {side: [] for side in args.sizes}
    for sample in val:
        masks = ground_truth(sample, read_image(sample.image_path).shape)
        for side in args.sizes:
            counts[side].append(ceiling_counts(masks, side))
    print(f"{len(val)} validation image(s) of {args.data}, fold {args.fold} of {args.n_folds}")
    rows = []
    for side in args.sizes:
        dice = dice_from_counts(np.stack(counts[side])).mean(axis=0)
        low = int(dice.argmin())
        rows.append([side, f"{dice.mean():.4f}", f"{dice[:19].mean():.4f}", f"{CLASSES[low]} {dice[low]:.4f}"])
    print(markdown_table(["logit grid", "mean Dice", "finger bones", "lowest class"], rows, "rrrl"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
