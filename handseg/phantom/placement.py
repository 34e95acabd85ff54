"""From the anatomy frame (mm, y up, right hand) to image pixels: mirroring, rotation, scale and position.

Also turns outlines into the annotation polygons: clipped to the image, rounded to integer pixels, with
repeated vertices removed. The renderer fills exactly these integer polygons, so the JSON outline and the
drawn bone are the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handseg.format.geometry import clip_polygon
from handseg.phantom.shapes import rotation

SOFT_MARGIN_MM = 9.0  # room kept around the bones for soft tissue when framing the hand


@dataclass(frozen=True)
class Frame:
    """Affine map anatomy (mm) -> image (px): ``p_img = p @ matrix.T + offset``; ``scale`` is px per mm."""

    matrix: np.ndarray
    offset: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) mm -> (N, 2) float64 px (x = column, y = row)."""
        return np.asarray(points, dtype=np.float64) @ self.matrix.T + self.offset

    def vector(self, v: np.ndarray) -> np.ndarray:
        """A direction or offset (mm) in image pixels, without the translation."""
        return np.asarray(v, dtype=np.float64) @ self.matrix.T


def orientation(side: str, angle_deg: float) -> np.ndarray:
    """2x2 unit-scale map: mirror left hands (thumb on the other side), rotate, flip y (rows grow downwards)."""
    mirror = np.diag([-1.0, 1.0]) if side == "L" else np.eye(2)
    flip = np.diag([1.0, -1.0])
    return flip @ rotation(angle_deg) @ mirror


def sample_frame(
    rng: np.random.Generator, hand_points: np.ndarray, wrist_mm: np.ndarray, size: int, side: str
) -> Frame:
    """Choose rotation, zoom and position so the hand (and some forearm) lies inside a ``size`` image.

    ``hand_points`` are all bone outline points except the forearm's (mm); ``wrist_mm`` is a point on the
    forearm that must stay visible, so the radius and ulna always enter from the bottom edge.
    """
    angle = float(np.clip(rng.normal(0.0, 5.0), -14.0, 14.0))
    base = orientation(side, angle)
    pts = np.vstack([hand_points, wrist_mm[None]]) @ base.T
    lo = pts.min(axis=0) - SOFT_MARGIN_MM
    hi = pts.max(axis=0) + SOFT_MARGIN_MM
    extent = hi - lo
    fill = rng.uniform(0.78, 0.95)
    scale = fill * size / float(extent.max())
    span = extent * scale
    free = np.maximum(size - span, 0.0)
    # Horizontal position anywhere it fits; vertically the fingertips stay near the top and the forearm
    # runs out of the bottom edge.
    ox = rng.uniform(0.1, 0.9) * free[0]
    oy = rng.uniform(0.05, 0.5) * free[1]
    offset = np.array([ox, oy]) - lo * scale
    return Frame(matrix=base * scale, offset=offset, scale=scale)


def to_annotation_polygon(points_px: np.ndarray, size: int) -> np.ndarray:
    """Float outline (N, 2) px -> integer polygon (M, 2) int32 inside [0, size-1], no repeated vertices.

    A bone too small to keep three distinct vertices after rounding gets a tiny triangle at its centre.
    """
    clipped = clip_polygon(points_px, 0.0, float(size - 1))
    if len(clipped) == 0:
        raise ValueError("bone outline lies entirely outside the image")
    pts = np.rint(clipped).astype(np.int32)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    pts = pts[keep] if keep.any() else pts[:1]
    if len(np.unique(pts, axis=0)) < 3:
        c = np.clip(np.rint(clipped.mean(axis=0)).astype(np.int32), 0, size - 2)
        pts = np.array([c, c + [1, 0], c + [0, 1]], dtype=np.int32)
    return pts
