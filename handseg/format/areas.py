"""Per-class areas of multi-label masks in square millimetres, from the detector's pixel spacing."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from handseg.format.classes import CLASSES


def pixel_area_mm2(spacing_mm: float | Sequence[float]) -> float:
    """Area of one pixel in mm^2 from a spacing in mm: one number (square pixels) or (row, column) spacing,
    the order of DICOM's PixelSpacing. Raises ValueError for a spacing that is not positive and finite."""
    values = [spacing_mm] if isinstance(spacing_mm, (int, float)) else list(spacing_mm)
    if len(values) not in (1, 2) or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                                            for v in values):
        raise ValueError(f"pixel spacing must be one or two positive numbers (mm), got {spacing_mm!r}")
    return float(values[0]) * float(values[-1])


def class_areas_mm2(pixel_counts: Sequence[int] | np.ndarray, spacing_mm: float | Sequence[float]) -> dict[str, float]:
    """Area of every class in mm^2: {class name: pixel count x pixel area}, CLASSES order.

    Args:
        pixel_counts: (29,) pixels per class (classes overlap: each is counted on its own, as
            :meth:`handseg.format.class_masks.ClassMasks.areas` does).
        spacing_mm: pixel spacing in mm, one number or (row, column).
    """
    counts = np.asarray(pixel_counts)
    if counts.shape != (len(CLASSES),):
        raise ValueError(f"expected {len(CLASSES)} per-class pixel counts, got shape {counts.shape}")
    unit = pixel_area_mm2(spacing_mm)
    return {name: float(n) * unit for name, n in zip(CLASSES, counts)}
