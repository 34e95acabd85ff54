"""Validation outputs people read: Dice table (markdown, CSV, JSON), per-class bar chart, worst-image overlays
(true positive, false positive, false negative colours, with a legend and the classes drawn)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from evaluator.context import EvalContext
from evaluator.overlays import (
    OVERLAY_MAX_SIDE,
    LegendRow,
    class_rows,
    display_size,
    draw_class_keys,
    shrink,
    with_legend,
)
from handseg.data.image_io import read_image, write_png
from handseg.format.classes import CLASSES
from handseg.format.metrics import format_dice_table
from handseg.inference.pipeline import predict_masks
from handseg.inference.scoring import ground_truth
from handseg.runtime.atomic import atomic_write_bytes, atomic_write_text

# Overlay colours (RGB): true positive, false positive, false negative.
TP_RGB, FP_RGB, FN_RGB = (40, 200, 80), (240, 60, 40), (60, 120, 255)
OUTCOME_LEGEND = (
    LegendRow("Pixels (any bone)", heading=True),
    LegendRow("true positive", TP_RGB),
    LegendRow("false positive (extra)", FP_RGB),
    LegendRow("false negative (missed)", FN_RGB),
)


def write_validation_report(out: Path, summary, result, meta: dict) -> dict:
    """Write dice.md, dice.csv, dice.json and dice.png under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md = (
        f"# Validation Dice\n\ncheckpoint `{meta.get('checkpoint')}`, engine `{meta.get('engine')}`, "
        f"fold {meta.get('fold')} of {meta.get('n_folds')}, {summary.n_images} images\n\n"
        f"{format_dice_table(summary)}\n"
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "dice"])
    for name in CLASSES:
        writer.writerow([name, f"{summary.per_class[name]:.6f}"])
    writer.writerow(["mean", f"{summary.mean:.6f}"])
    per_image = np.asarray(result.per_image_dice)
    data = {
        "mean_dice": summary.mean,
        "per_class": summary.per_class,
        "n_images": summary.n_images,
        "per_image": {n: [round(float(v), 6) for v in row] for n, row in zip(result.names, per_image)},
        "settings": meta,
    }
    paths = {
        "markdown": atomic_write_text(out / "dice.md", md),
        "csv": atomic_write_text(out / "dice.csv", buf.getvalue()),
        "json": atomic_write_text(out / "dice.json", json.dumps(data, indent=2) + "\n"),
        "chart": dice_chart(summary, out / "dice.png"),
    }
    return paths


def dice_chart(summary, path: Path) -> Path:
    """Per-class bar chart of Dice with the mean as a dashed line."""
    values = [summary.per_class[c] for c in CLASSES]
    fig = Figure(figsize=(12, 4), dpi=100)
    ax = fig.subplots()
    ax.bar(range(len(CLASSES)), values, color="#4c72b0")
    ax.axhline(summary.mean, color="k", linestyle="--", linewidth=1, label=f"mean {summary.mean:.4f}")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=70, fontsize=8)
    ax.set_ylim(max(0.0, min(values) - 0.05), 1.0)
    ax.set_ylabel("Dice")
    ax.set_title(f"Per-class Dice ({summary.n_images} images)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), frameon=False, fontsize=9)  # above the bars
    return save_figure(fig, path)


def save_figure(fig: Figure, path: Path, layout: bool = True) -> Path:
    """Write ``fig`` as a PNG, atomically (matplotlib's object API: no global backend); ``layout``: apply
    ``tight_layout`` first (pass False when the caller laid it out with its own margins)."""
    if layout:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def overlay_rgb(image: np.ndarray, pred: np.ndarray, target: np.ndarray,
                max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """(h, w, 3) uint8 picture: the X-ray in gray with TP / FP / FN pixels (any class) in three colours.

    image (H, W) uint8; pred, target (29, H, W) bool. A pixel wrong for any class shows as FN (missed bone)
    before FP (extra bone); TP only where every class agrees. Downscaled so the longer side is <= max_side.
    """
    pred = pred.astype(bool)
    target = target.astype(bool)
    fn = (target & ~pred).any(0)
    fp = (pred & ~target).any(0)
    tp = (pred & target).any(0) & ~fn & ~fp
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.float32)
    for mask, colour in ((tp, TP_RGB), (fp, FP_RGB), (fn, FN_RGB)):
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.asarray(colour, np.float32)
    return shrink(rgb.clip(0, 255).astype(np.uint8), display_size(image.shape[:2], max_side))


def comparison_overlay(image: np.ndarray, pred: np.ndarray, target: np.ndarray,
                       max_side: int = OVERLAY_MAX_SIDE) -> np.ndarray:
    """:func:`overlay_rgb` with each bone that is predicted or labelled marked by its key, and a legend panel
    on the right: the three outcome colours, then the keys and names of the classes drawn.

    image (H, W) uint8; pred, target (29, H, W) bool. Returns (h, w + panel, 3) uint8 RGB.
    """
    rgb = overlay_rgb(image, pred, target, max_side)
    hw = display_size(image.shape[:2], max_side)
    either = np.asarray(pred, bool) | np.asarray(target, bool)
    small = np.stack([shrink(m.astype(np.float32), hw) >= 0.5 for m in either])
    present = draw_class_keys(rgb, small)
    return with_legend(rgb, list(OUTCOME_LEGEND) + class_rows(present, "Bones drawn", swatches=False))


def write_overlays(out: Path, worst: list, ctx: EvalContext) -> list[Path]:
    """Overlay PNGs of the ``worst`` images, (sample, mean Dice) pairs: the prediction of the evaluation ``ctx``,
    recomputed, against the ground truth; returns the paths."""
    paths = []
    for rank, (sample, mean_dice) in enumerate(worst):
        image = read_image(sample.image_path)
        pred = predict_masks(ctx.call, image)
        pred = pred.to_dense().cpu().numpy()
        target = ground_truth(sample, image.shape[:2])
        rgb = comparison_overlay(image, pred, target)
        name = f"{rank:02d}_{Path(sample.name).stem}_dice{mean_dice:.4f}.png"
        paths.append(write_png(out / name, rgb[..., ::-1].copy()))  # write_png takes BGR like cv2
    return paths
