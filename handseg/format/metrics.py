"""The competition Dice, from per-image counts that processes can sum.

Per image and class: ``(2 |P ∩ G| + eps) / (|P| + |G| + eps)`` with ``eps = 1e-4`` (so empty vs empty is 1,
empty vs non-empty is ~0), computed at the original image size after thresholding. The score is the mean
over images per class, then the mean over classes. Counts ``[intersection, pred_sum, target_sum]`` per image
and class are integers, so shards of a validation set evaluated by several processes are gathered exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from handseg.format.classes import CLASSES
from handseg.format.markdown import markdown_table
from handseg.format.rle import rle_pixels

DICE_EPS = 1e-4


def _is_torch(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "device")


def dice_counts(pred: Any, target: Any) -> np.ndarray:
    """Counts of one image: (C, 3) int64 ``[intersection, pred_sum, target_sum]`` per class.

    Args:
        pred, target: (C, H, W) masks, bool or {0, 1} integers (nonzero = 1), both numpy arrays or both torch
            tensors (torch is reduced on its device; only the (C, 3) result moves to the CPU).
    """
    if tuple(pred.shape) != tuple(target.shape) or len(pred.shape) != 3:
        raise ValueError(f"pred and target must both be (C, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    if _is_torch(pred) or _is_torch(target):
        import torch

        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target, device=pred.device)
        if pred.device.type != "cpu":
            p, g = pred != 0, target != 0
            counts = torch.stack([(p & g).sum(dim=(1, 2)), p.sum(dim=(1, 2)), g.sum(dim=(1, 2))], dim=1)
            return counts.to(torch.int64).cpu().numpy()
        # On the CPU numpy's count_nonzero is ~14x faster than torch's sums of bool tensors (0.14 s vs 2.0 s
        # for (29, 2048, 2048)); .numpy() shares the memory.
        pred, target = pred.detach().numpy(), target.detach().numpy()
    p = _nonzero(np.asarray(pred))
    g = _nonzero(np.asarray(target))
    c = p.shape[0]
    p2, g2 = p.reshape(c, -1), g.reshape(c, -1)
    inter = np.count_nonzero(p2 & g2, axis=1)
    return np.stack([inter, np.count_nonzero(p2, axis=1), np.count_nonzero(g2, axis=1)], axis=1).astype(np.int64)


def dice_counts_rle(rles: Sequence[str], target: np.ndarray) -> np.ndarray:
    """Counts (C, 3) int64 ``[intersection, pred_sum, target_sum]`` of C competition RLE strings against (C, H, W)
    target masks (nonzero = 1), without decoding a full mask: equal to ``dice_counts`` of the decoded masks, in
    O(predicted pixels) per class plus one count over each target."""
    if len(rles) != target.shape[0]:
        raise ValueError(f"{len(rles)} RLE strings for {target.shape[0]} target masks")
    flat = target.reshape(target.shape[0], -1)
    counts = np.zeros((len(rles), 3), dtype=np.int64)
    for c, rle in enumerate(rles):
        pixels = rle_pixels(rle, target.shape[1:])
        counts[c] = (np.count_nonzero(flat[c, pixels]), pixels.size, np.count_nonzero(flat[c]))
    return counts


def _nonzero(a: np.ndarray) -> np.ndarray:
    """``a != 0`` as bool (no copy when ``a`` is already bool)."""
    return a if a.dtype == np.bool_ else a != 0


def dice_from_counts(counts: np.ndarray) -> np.ndarray:
    """(..., C, 3) counts -> (..., C) float64 Dice ``(2I + eps) / (P + G + eps)``."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape[-1] != 3:
        raise ValueError(f"counts must end in a dimension of 3 [I, P, G], got shape {counts.shape}")
    inter, psum, gsum = counts[..., 0], counts[..., 1], counts[..., 2]
    return (2.0 * inter + DICE_EPS) / (psum + gsum + DICE_EPS)


def dice_score(pred: Any, target: Any) -> np.ndarray:
    """Per-class Dice of one image: (C, H, W) masks -> (C,) float64."""
    return dice_from_counts(dice_counts(pred, target))


@dataclass
class DiceSummary:
    """Mean Dice over images per class (CLASSES order), their mean over classes, and the image count."""

    per_class: dict[str, float]
    mean: float
    n_images: int


def summarize_dice(per_image: np.ndarray, class_names: tuple[str, ...] | list[str] = CLASSES) -> DiceSummary:
    """(N, C) per-image Dice -> per-class means over images and their mean over classes."""
    per_image = np.asarray(per_image, dtype=np.float64)
    if per_image.ndim != 2 or per_image.shape[1] != len(class_names):
        raise ValueError(f"expected (N, {len(class_names)}) per-image Dice, got shape {per_image.shape}")
    if per_image.shape[0] == 0:
        raise ValueError("no images to summarise")
    per_class = per_image.mean(axis=0)
    return DiceSummary(
        per_class={name: float(v) for name, v in zip(class_names, per_class)},
        mean=float(per_class.mean()),
        n_images=int(per_image.shape[0]),
    )


def format_dice_table(summary: DiceSummary, digits: int = 4) -> str:
    """Markdown table: one row per class in CLASSES order, then the mean."""
    rows = [[name, f"{v:.{digits}f}"] for name, v in summary.per_class.items()]
    rows.append(["**mean**", f"**{summary.mean:.{digits}f}**"])
    return (markdown_table(["class", "dice"], rows, "lr") + "\n\n"
            f"{summary.n_images} image(s); Dice per image and class, mean over images, then over classes.")
