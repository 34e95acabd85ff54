"""Polygon geometry shared by the phantom generator and the perturbations: clipping to a rectangle."""

from __future__ import annotations

import numpy as np


def clip_polygon(points: np.ndarray, lo: float | tuple[float, float], hi: float | tuple[float, float]) -> np.ndarray:
    """Sutherland-Hodgman clip of a closed polygon to the rectangle ``[lo, hi]`` (inclusive).

    Args:
        points: (N, 2) (x, y) vertices.
        lo, hi: the bounds, one number for both axes (a square) or an (x, y) pair each.
    Returns:
        (M, 2) float64 vertices of the clipped polygon (the input, as float64, when it lies inside); may have
        fewer than 3 points, or none, when the polygon lies (mostly) outside.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lo_xy = np.broadcast_to(np.asarray(lo, dtype=np.float64), (2,))
    hi_xy = np.broadcast_to(np.asarray(hi, dtype=np.float64), (2,))
    if len(p) and (p >= lo_xy).all() and (p <= hi_xy).all():
        return p
    for axis in (0, 1):
        for bound, inside in ((lo_xy[axis], np.greater_equal), (hi_xy[axis], np.less_equal)):
            if len(p) == 0:
                return p
            q = np.roll(p, -1, axis=0)
            a_in, b_in = inside(p[:, axis], bound), inside(q[:, axis], bound)
            out = []
            for a, b, ai, bi in zip(p, q, a_in, b_in):
                if ai:
                    out.append(a)
                if ai != bi:
                    t = (bound - a[axis]) / (b[axis] - a[axis])
                    out.append(a + t * (b - a))
            p = np.array(out).reshape(-1, 2)
    return p
