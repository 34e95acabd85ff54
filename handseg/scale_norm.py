"""Hand-size normalisation for whole-image (resize-mode) passes: pure functions.

A stage-1 network sees the whole image resized to a fixed side, so the size of the hand in its input follows the
size of the hand in the X-ray: a hand shrunk by a zoom of 0.75 (or a child's, or one far from the detector) shows
its carpal bones on half as many input pixels as in training, and the network misses some of them. The first pass
tells how much of the image the hand covers; when that is far from what the validation images cover (the
reference, stored with the tuned thresholds), a second pass runs on a window of the image resized so that the hand
covers the reference fraction of it, and its logits replace the first pass's where the window lies.

The engine keeps its static input side: the second pass resizes the whole image by ``factor`` and takes a
``side`` x ``side`` window of it (magnified: around the hand, inside the image; shrunk: the whole image, padded
black, as training's affine augmentation pads). Offsets and sides are multiples of :data:`GRID`, so the window's
logits fall on whole cells of the first pass's grid (SegFormer logits are 1/4 of the input; UperNet's are full).

Measured on the demo's stage-1 model (6 validation images, 0.5 thresholds): zoom 0.75 mean Dice 0.761 -> 0.835,
zoom 1.25 0.819 -> 0.861, unperturbed images unchanged (0.8854; every one within the tolerance).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from handseg.config_schema import FieldError

GRID = 4  # side and offsets of the second pass are multiples of this (the coarsest logit stride)


@dataclass(frozen=True)
class ScaleNorm:
    """``reference_fraction``: the fraction of the image a hand covers (the union of its bones) on the
    validation images; ``tolerance``: a relative change of scale below which the first pass stands;
    ``min_factor``/``max_factor``: the range of the resize factor (1.33 undoes a zoom of 0.75)."""

    reference_fraction: float
    tolerance: float = 0.1
    min_factor: float = 0.75
    max_factor: float = 1.4

    def check(self) -> None:
        if not 0.0 < self.reference_fraction < 1.0:
            raise FieldError("reference_fraction", f"must be in (0, 1), got {self.reference_fraction}")
        if not 0.0 <= self.tolerance < 1.0:
            raise FieldError("tolerance", f"must be in [0, 1), got {self.tolerance}")
        if not 0.0 < self.min_factor <= 1.0 <= self.max_factor:
            raise FieldError("min_factor", f"need 0 < min_factor <= 1 <= max_factor, got {self.min_factor}, "
                                           f"{self.max_factor}")

    def to_dict(self) -> dict:
        return {k: round(v, 6) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ScaleNorm":
        unknown = set(data) - {"reference_fraction", "tolerance", "min_factor", "max_factor"}
        if unknown:
            raise FieldError(sorted(unknown)[0], "unknown scale_norm key")
        norm = cls(**{k: float(v) for k, v in data.items()})
        norm.check()
        return norm


def hand_fraction(logits: torch.Tensor) -> float:
    """Fraction of the grid where any class is predicted (logit > 0): ``logits`` (C, h, w) over the whole image."""
    return float((logits > 0).any(0).float().mean())


def hand_centre(logits: torch.Tensor) -> tuple[float, float]:
    """Centre (y, x) of the box of the predicted hand, as fractions of the image side (0.5, 0.5 when empty);
    ``logits`` (C, h, w) over the whole image."""
    fg = (logits > 0).any(0)
    rows, cols = torch.nonzero(fg.any(1)).flatten(), torch.nonzero(fg.any(0)).flatten()
    if len(rows) == 0:
        return 0.5, 0.5
    h, w = fg.shape
    return (float(rows[0] + rows[-1] + 1) / (2 * h), float(cols[0] + cols[-1] + 1) / (2 * w))


def rescale_factor(fraction: float, norm: ScaleNorm) -> float:
    """How much to magnify the image so that a hand covering ``fraction`` of it covers the reference fraction:
    ``sqrt(reference / fraction)`` clipped to the norm's range; 1.0 within the tolerance (and for no hand)."""
    if fraction <= 0.0:
        return 1.0
    factor = min(max(math.sqrt(norm.reference_fraction / fraction), norm.min_factor), norm.max_factor)
    return 1.0 if abs(factor - 1.0) <= norm.tolerance else factor


def _on_grid(value: float) -> int:
    return int(round(value / GRID)) * GRID


def second_pass_window(side: int, factor: float, centre: tuple[float, float]) -> tuple[int, int, int]:
    """``(resized, top, left)``: the image is resized to ``resized`` x ``resized`` and the model sees its window
    ``[top, top + side) x [left, left + side)`` (negative offsets: black padding). Magnified, the window is
    centred on the hand and kept inside the image; shrunk, the whole image lies in the window, as near the centre
    as the hand allows. All three are multiples of :data:`GRID` (``side`` must be one)."""
    if side % GRID:
        raise ValueError(f"side {side} is not a multiple of {GRID}")
    resized = max(GRID, _on_grid(side * factor))
    lo, hi = min(0, resized - side), max(0, resized - side)
    top, left = (min(max(_on_grid(c * resized - side / 2), lo), hi) for c in centre)
    return resized, top, left


def window_image(image: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The ``side`` x ``side`` window at (``top``, ``left``) of ``image`` (H, W), zero outside it."""
    out = np.zeros((side, side), dtype=image.dtype)
    h, w = image.shape
    y0, y1, x0, x1 = max(top, 0), min(top + side, h), max(left, 0), min(left + side, w)
    if y0 < y1 and x0 < x1:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


def paste_window(canvas: torch.Tensor, window: torch.Tensor, top: int, left: int, stride: int) -> torch.Tensor:
    """Write ``window`` logits (B, C, s, s) of the window at (``top``, ``left``) (input pixels) into ``canvas``
    (B, C, H', W'), the logits over the whole resized image; ``stride``: input pixels per logit. In place."""
    t, lft = top // stride, left // stride
    s = window.shape[-1]
    y0, y1 = max(t, 0), min(t + s, canvas.shape[-2])
    x0, x1 = max(lft, 0), min(lft + s, canvas.shape[-1])
    if y0 < y1 and x0 < x1:
        canvas[..., y0:y1, x0:x1] = window[..., y0 - t:y1 - t, x0 - lft:x1 - lft]
    return canvas
