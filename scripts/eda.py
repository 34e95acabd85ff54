#!/usr/bin/env python
"""Exploratory summary of a data root in the competition layout (real or phantom data).

    python scripts/eda.py --data data/phantom [--out outputs/eda]

Prints image and ID counts, image sizes and the meta data columns; writes ``class_area.png`` (mean polygon
area per class in competition order, the smallest classes highlighted), ``class_area.csv``, ``overlays.png``
(a few training images with their annotation outlines) and ``summary.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image_size
from handseg.data.meta_data import meta_mapping, read_meta
from handseg.format.annotations import read_annotation
from handseg.format.classes import CLASSES
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import DataFormatError, cli_main

N_SMALLEST = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--data", type=Path, required=True, help="data root (train/DCM, train/outputs_json, test/DCM)")
    p.add_argument("--out", type=Path, default=Path("outputs/eda"), help="output folder (default outputs/eda)")
    p.add_argument("--overlays", type=int, default=4, help="training images in overlays.png (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def class_areas(label_paths: list[Path], progress: bool = True) -> np.ndarray:
    """(N images, 29) float64 polygon areas in px^2 (shoelace); NaN where an image lacks the class."""
    from tqdm import tqdm

    areas = np.full((len(label_paths), len(CLASSES)), np.nan)
    for i, path in enumerate(tqdm(label_paths, desc="annotations", unit="file", disable=not progress)):
        ann = read_annotation(path, require_all=False)
        for label, pts in ann.polygons.items():
            areas[i, CLASSES.index(label)] = cv2.contourArea(pts.astype(np.float32).reshape(-1, 1, 2))
    return areas


def plot_class_areas(mean_area: np.ndarray, path: Path, title: str) -> list[str]:
    """Bar chart of mean area per class (competition order); returns the highlighted smallest classes."""
    from matplotlib.figure import Figure

    from evaluator.report import save_figure

    order = np.argsort(np.where(np.isnan(mean_area), np.inf, mean_area))
    smallest = [CLASSES[i] for i in order[:N_SMALLEST]]
    colours = ["#d62728" if c in smallest else "#4c72b0" for c in CLASSES]
    fig = Figure(figsize=(11, 4.2), dpi=100)
    ax = fig.subplots()
    ax.bar(range(len(CLASSES)), mean_area, color=colours)
    ax.set_xticks(range(len(CLASSES)), [c.replace("finger-", "f") for c in CLASSES], rotation=60, fontsize=8)
    ax.set_ylabel("mean area (px$^2$)")
    ax.set_title(title + f"  (red: the {N_SMALLEST} smallest: {', '.join(smallest)})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)  # atomic: a unique temporary name, then a rename
    return smallest


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train = index_split(args.data, "train")
    try:
        test = index_split(args.data, "test")
    except DataFormatError as exc:
        print(f"no test split ({exc})")
        test = []
    sizes = Counter(read_image_size(s.image_path) for s in train + test)
    print(f"train: {len(train)} images, {len({s.patient_id for s in train})} IDs")
    print(f"test:  {len(test)} images, {len({s.patient_id for s in test})} IDs")
    print("image sizes (h x w): " + ", ".join(f"{h}x{w}: {n}" for (h, w), n in sizes.most_common()))
    meta = read_meta(args.data)
    if meta is not None:
        print(f"meta data: {len(meta)} IDs; " + "; ".join(meta_mapping(meta)))

    areas = class_areas([s.label_path for s in train], progress=not args.quiet)
    with np.errstate(all="ignore"):
        mean_area = np.nanmean(areas, axis=0)
    args.out.mkdir(parents=True, exist_ok=True)
    chart = args.out / "class_area.png"
    smallest = plot_class_areas(mean_area, chart, f"{args.data.name}: mean bone area over {len(train)} images")
    rows = ["class,mean_area_px2,min_area_px2,max_area_px2,images"]
    for c, col in zip(CLASSES, areas.T):
        ok = col[~np.isnan(col)]
        stats = (f"{ok.mean():.1f},{ok.min():.1f},{ok.max():.1f}" if ok.size else ",,")
        rows.append(f"{c},{stats},{ok.size}")
    atomic_write_text(args.out / "class_area.csv", "\n".join(rows) + "\n")
    print("smallest classes by mean area: " + ", ".join(f"{c} ({mean_area[CLASSES.index(c)]:.0f} px^2)"
                                                            for c in smallest))

    from handseg.phantom.preview import write_preview

    pairs = [(s.image_path, s.label_path) for s in train[: max(1, args.overlays)]]
    overlays = write_preview(pairs, args.out / "overlays.png", tile=512, cols=min(4, len(pairs)))
    summary = {"data": str(args.data), "train_images": len(train), "test_images": len(test),
               "train_ids": len({s.patient_id for s in train}), "test_ids": len({s.patient_id for s in test}),
               "image_sizes": {f"{h}x{w}": n for (h, w), n in sizes.items()},
               "mean_area_px2": {c: (None if np.isnan(a) else round(float(a), 1)) for c, a in zip(CLASSES, mean_area)},
               "smallest": smallest}
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"wrote {chart}, {args.out / 'class_area.csv'}, {overlays}, {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
