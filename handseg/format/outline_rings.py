"""A mask's outlines (outer boundaries and holes, nested) and how several of them become one polygon.

The annotation format has one polygon per class, but a predicted mask may have islands and holes. Outlines are
traced through pixel centres (``cv2.findContours``, ``RETR_TREE``, ``CHAIN_APPROX_NONE``): an outer outline
runs through the component's boundary pixels, a hole's through the component pixels around the hole, so that
filled with boundary pixels included and the even-odd rule (:func:`handseg.format.rasterize.rasterize`) the
outlines give the mask back. :func:`join_rings` joins them into one closed polygon by zero-width bridges:
``... a, b, <ring from b round to b>, b, a ...``, where ``a`` is the polygon's vertex nearest to the ring's
vertex ``b``. A bridge is two coincident edges run both ways, so it changes no pixel's parity: even-odd fill
(OpenCV, scikit-image, PIL) gives each outline's pixels back, plus the pixels on the bridge line itself (none
where the bridge runs inside the bone, the bridge's length where it crosses background to an island). Holes
run the other way round from outer outlines (OpenCV traces them so), so non-zero fill agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_PAIR_CHUNK = 1 << 20  # distances computed per chunk in nearest_pair (bounds its memory to ~8 MB)


@dataclass(frozen=True)
class Ring:
    """One traced outline: ``points`` (M >= 1, 2) int32 (x, y) pixel centres, ``parent`` the index of the
    outline it lies in (-1 at the top), ``hole`` whether it bounds a hole, ``pixels`` about how many pixels it
    adds (an outer outline) or removes (a hole) when joined."""

    points: np.ndarray
    parent: int
    hole: bool
    pixels: float


def mask_rings(mask: np.ndarray) -> list[Ring]:
    """Every outline of an (H, W) bool / {0, 1} mask, nested (``RETR_TREE``); [] for an empty mask."""
    m = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    parents = hierarchy[0][:, 3]
    rings = []
    for i, contour in enumerate(contours):
        depth, p = 0, parents[i]
        while p >= 0:
            depth, p = depth + 1, parents[p]
        points = contour.reshape(-1, 2).astype(np.int32)
        hole = depth % 2 == 1
        # A filled outline covers its area plus about half its boundary pixels; a hole's traced outline runs
        # through the bone around it, so it removes its area less about half its length.
        area = cv2.contourArea(contour)
        pixels = area - 0.5 * len(points) + 1.0 if hole else area + 0.5 * len(points) + 1.0
        rings.append(Ring(points, int(parents[i]), hole, max(pixels, 1.0)))
    return rings


def nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices ``(i, j)`` of the closest points ``a[i]``, ``b[j]`` of two (N, 2) / (M, 2) point sets, by the
    chessboard distance ``max(|dx|, |dy|)`` (a bridge's pixel line is that long; the squared Euclidean
    distance breaks ties, then the first pair in row-major order)."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    best, best_ij = None, (0, 0)
    step = max(1, _PAIR_CHUNK // max(1, len(b64)))
    for start in range(0, len(a64), step):
        diff = np.abs(a64[start : start + step, None, :] - b64[None, :, :])
        d = diff.max(axis=2) * (1 << 32) + (diff**2).sum(axis=2)
        k = int(np.argmin(d))
        i, j = divmod(k, d.shape[1])
        if best is None or d[i, j] < best:
            best, best_ij = int(d[i, j]), (start + i, j)
    return best_ij


def chessboard_gap(a: np.ndarray, b: np.ndarray) -> int:
    """The least ``max(|dx|, |dy|)`` between a point of ``a`` and one of ``b`` ((N, 2), (M, 2)): one more than
    the pixels a straight bridge between them crosses outside both."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    step = max(1, _PAIR_CHUNK // max(1, len(b64)))
    return min(int(np.abs(a64[s : s + step, None, :] - b64[None, :, :]).max(axis=2).min())
               for s in range(0, len(a64), step))


def splice(polygon: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """``polygon`` with ``ring`` joined in by a zero-width bridge between their closest vertices (module
    docstring); both (N, 2) int32, the result (N + M + 2, 2) int32."""
    i, j = nearest_pair(polygon, ring)
    rolled = np.roll(ring, -j, axis=0)
    return np.concatenate([polygon[: i + 1], rolled, rolled[:1], polygon[i:]]).astype(np.int32)


def join_rings(rings: list[np.ndarray]) -> np.ndarray:
    """One closed polygon from several outlines: the first is the base, each next one is bridged to the
    nearest vertex of what is joined so far (so neighbouring islands bridge to each other)."""
    polygon = np.asarray(rings[0], dtype=np.int32).reshape(-1, 2)
    for ring in rings[1:]:
        polygon = splice(polygon, np.asarray(ring, dtype=np.int32).reshape(-1, 2))
    return polygon
