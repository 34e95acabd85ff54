#!/usr/bin/env python
"""How faithfully predict.py's annotation JSONs give back its masks: Dice per class, the worst over all images.

    python predict.py data/phantom/test/DCM --cfg-path config/demo/eval.yaml --out outputs/demo/predict_test \\
        --masks npz
    python scripts/polygon_fidelity.py outputs/demo/predict_test [--target 0.995]

Every ``<stem>.json`` under the folder that has a ``<stem>.masks.npz`` beside it is one image. The JSON is read as
plain JSON (not through the project's annotation reader), its polygons rasterised at the image's size with
:func:`handseg.format.rasterize.rasterize`, and compared with the saved masks, which are the masks of the
submission (all components, holes as predicted). A class predicted empty must have no polygon. Prints per class
the images that have it, the worst and the mean Dice, then the worst class Dice over all images; exits 1 when it
is below ``--target``.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import DataFormatError, cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("folder", type=Path, help="predict.py's --out folder, written with --masks npz")
    p.add_argument("--target", type=float, default=0.995, help="least acceptable Dice per class (default 0.995)")
    return p.parse_args(argv)


def read_polygons(path: Path) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
    """((height, width), label -> (N, 2) float64 points) of an annotation JSON, read as plain JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        size = (int(data["metadata"]["height"]), int(data["metadata"]["width"]))
        polygons = {a["label"]: np.asarray(a["points"], dtype=np.float64) for a in data["annotations"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(path, f"cannot read as an annotation JSON ({type(exc).__name__}: {exc})") from None
    unknown = sorted(set(polygons) - set(CLASSES))
    if unknown:
        raise DataFormatError(path, f"unknown label {unknown[0]!r}")
    return size, polygons


def image_dice(json_path: Path, npz_path: Path) -> np.ndarray:
    """(29,) float64: Dice of the rasterised polygon against the saved mask per class; NaN where both are empty,
    0 where the mask is empty but a polygon is not (or the reverse)."""
    size, polygons = read_polygons(json_path)
    try:
        with np.load(npz_path) as saved:
            masks = saved["masks"].astype(bool)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DataFormatError(npz_path, f"cannot read the masks ({type(exc).__name__}: {exc})") from None
    if masks.shape != (len(CLASSES), *size):
        raise DataFormatError(npz_path, f"masks of shape {masks.shape}, the JSON says {size}")
    empty = np.zeros((0, 2))
    back = rasterize([polygons.get(c, empty) for c in CLASSES], size).astype(bool)
    inter = np.count_nonzero(back & masks, axis=(1, 2))
    total = np.count_nonzero(back, axis=(1, 2)) + np.count_nonzero(masks, axis=(1, 2))
    with np.errstate(invalid="ignore"):
        return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), np.nan)


def fidelity(folder: Path) -> tuple[list[str], np.ndarray]:
    """(image stems relative to ``folder``, (N, 29) Dice) for every JSON with a masks file beside it."""
    pairs = []
    for js in sorted(folder.rglob("*.json")):
        npz = js.with_name(js.name[: -len(".json")] + ".masks.npz")
        if npz.is_file():
            pairs.append((js, npz))
    if not pairs:
        raise DataFormatError(folder, "no <stem>.json with a <stem>.masks.npz beside it (run predict.py with "
                                      "--masks npz into this folder)")
    stems = [js.relative_to(folder).with_suffix("").as_posix() for js, _ in pairs]
    return stems, np.stack([image_dice(js, npz) for js, npz in pairs])


def report(stems: list[str], dice: np.ndarray) -> tuple[str, float, str]:
    """Printable table (class, images, worst, mean, worst image), the worst class Dice over all images and its
    class (NaN and "" when every mask is empty)."""
    lines = [f"{'class':<11} {'images':>6} {'worst':>8} {'mean':>8}  worst image"]
    for c, name in enumerate(CLASSES):
        col = dice[:, c]
        found = ~np.isnan(col)
        if not found.any():
            lines.append(f"{name:<11} {0:>6} {'-':>8} {'-':>8}")
            continue
        i = int(np.nanargmin(col))
        lines.append(f"{name:<11} {int(found.sum()):>6} {col[i]:>8.4f} {np.nanmean(col):>8.4f}  {stems[i]}")
    if not np.isfinite(dice).any():
        return "\n".join(lines), float("nan"), ""
    i, c = np.unravel_index(int(np.nanargmin(dice)), dice.shape)
    return "\n".join(lines), float(dice[i, c]), CLASSES[c]


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stems, dice = fidelity(args.folder)
    table, worst, name = report(stems, dice)
    print(table)
    if not name:
        print(f"every mask of the {len(stems)} image(s) is empty: nothing to compare")
        return 0
    print(f"worst class Dice over {len(stems)} image(s): {worst:.4f} ({name}); target {args.target}")
    return 0 if worst >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
