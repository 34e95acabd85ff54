"""Per-class areas of multi-label masks in square millimetres, from the detector's pixel spacing."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from handseg.classes import CLASSES


def pixel_area_mm2(spacing_mm: float | Sequence[float]) -> float:
    """Area of one pixel in mm^2 from a spacing in mm: one number (square pixels) or (row, column) spacing,
    the order of DICOM's PixelSpacing. Raises ValueError for a spacing that is not positive and finite."""
    values = [spacing_mm] if isinstance(spacing_mm, (int, float)) else list(spacing_mm)
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                            for v in values):
        raise ValueError(f"pixel spacing must be one or two positive numbers (mm), got {spacing_mm!r}")
    return float(values[0]) * float(values[-1])


def class_areas_mm2(masks: np.ndarray, spacing_mm: float | Sequence[float]) -> dict[str, float]:
    """Area of every class in mm^2: {class name: pixel count x pixel area}, CLASSES order.

    Args:
        masks: (29, H, W) bool or {0, 1} masks (classes overlap: each class is measured on its own).
        spacing_mm: pixel spacing in mm, one number or (row, column).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[0] != len(CLASSES):
        raise ValueError(f"expected ({len(CLASSES)}, H, W) masks, got shape {masks.shape}")
    unit = pixel_area_mm2(spacing_mm)
    counts = np.count_nonzero(masks.reshape(len(CLASSES), -1), axis=1)
    return {name: float(n) * unit for name, n in zip(CLASSES, counts)}
