"""Hand-size normalisation: pure functions.

Both stages learn bones at the sizes training shows them, and zoom augmentation only widens that so far: a hand
shrunk by a zoom of 0.75 (or a child's, or one further from the detector) shows its carpal bones on half as many
pixels, and the models miss some of them. The whole-image pass (a stage-1 model, or a cascade's stage 1) tells
how much of the image the hand covers; when that is far from what the validation hands cover (the reference,
stored with the tuned thresholds), the image is magnified or shrunk about the hand so that the hand has the
reference size (and sits in the middle), the models run on that image, and their masks (or probabilities) are
mapped back through the inverse of the same affine map.

Measured on the demo's cascade (6 validation images, eager, threshold 0.5, no post-processing): zoom 0.75 mean
Dice 0.8359 -> 0.9286, zoom 1.25 0.8583 -> 0.9115, unperturbed images unchanged (0.9340; every one of them
within the tolerance, so left alone).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from handseg.class_masks import ClassMasks
from handseg.config_schema import FieldError


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


def normalising_affine(image_hw: tuple[int, int], factor: float, centre: tuple[float, float]) -> np.ndarray:
    """(2, 3) float64 affine map from image pixels to the normalised image's: magnify by ``factor`` about the
    hand's ``centre`` (fractions of the sides, as :func:`hand_centre` gives) and move it to the image's centre."""
    h, w = image_hw
    cy, cx = centre[0] * h - 0.5, centre[1] * w - 0.5  # pixel centres at integer coordinates (OpenCV's)
    return np.array([[factor, 0.0, (w - 1) / 2 - factor * cx], [0.0, factor, (h - 1) / 2 - factor * cy]])


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``image`` (H, W) resampled through ``matrix`` (bilinear), black where it has no pixels."""
    h, w = image.shape
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def unwarp_probs(probs: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """Probabilities (C, H, W) over the normalised image mapped back to the image (0 where it saw nothing)."""
    h, w = probs.shape[-2:]
    out = [cv2.warpAffine(p.cpu().numpy(), matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) for p in probs.float()]
    return torch.from_numpy(np.stack(out)).to(probs.device)


def unwarp_masks(masks: ClassMasks, matrix: np.ndarray) -> ClassMasks:
    """Masks over the normalised image mapped back to the image, class box by class box (bilinear, cut at one
    half: nearest-pixel accurate without a full-size map)."""
    f, tx, ty = matrix[0, 0], matrix[0, 2], matrix[1, 2]
    h, w = masks.height, masks.width
    boxes, out = [], []
    for box, mask in zip(masks.boxes, masks.masks):
        if box is None:
            boxes.append(None)
            out.append(None)
            continue
        y0, x0, y1, x1 = box
        # the box's pixels (centres y0 .. y1 - 1) back in image pixels, one pixel of margin for the resampling
        top, left = max(int(np.floor((y0 - ty) / f)) - 1, 0), max(int(np.floor((x0 - tx) / f)) - 1, 0)
        bottom, right = min(int(np.ceil((y1 - 1 - ty) / f)) + 2, h), min(int(np.ceil((x1 - 1 - tx) / f)) + 2, w)
        if top >= bottom or left >= right:
            boxes.append(None)
            out.append(None)
            continue
        local = np.array([[f, 0.0, f * left + tx - x0], [0.0, f, f * top + ty - y0]])
        patch = cv2.warpAffine(mask.to(torch.uint8).mul(255).cpu().numpy(), local, (right - left, bottom - top),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
        boxes.append((top, left, bottom, right))
        out.append(torch.from_numpy(patch >= 128).to(mask.device))
    return ClassMasks(h, w, boxes, out).tight()
