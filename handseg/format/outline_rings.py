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


def _near_each_other(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the points of ``a`` and of ``b`` that can be in a closest pair: within an upper bound of the gap
    (from a sample of ``a``) of the other set's bounding box."""
    d = np.abs(a[:: max(1, len(a) // 64), None, :] - b[None, :, :]).max(axis=2)  # (<= 128, M)
    j = int(np.argmin(d.min(axis=0)))
    bound = int(np.abs(a - b[j]).max(axis=1).min())  # the gap from b's nearest sampled point to all of a

    def within(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        lo, hi = q.min(axis=0) - bound, q.max(axis=0) + bound
        return np.flatnonzero(((p >= lo) & (p <= hi)).all(axis=1))

    ia = within(a, b)
    ib = within(b, a[ia])
    return ia, ib


def nearest_pair(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices ``(i, j)`` of the closest points ``a[i]``, ``b[j]`` of two (N, 2) / (M, 2) point sets, by the
    chessboard distance ``max(|dx|, |dy|)`` (a bridge's pixel line is that long; the squared Euclidean
    distance breaks ties, then the first pair in row-major order)."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    ia, ib = _near_each_other(a64, b64)
    a64, b64 = a64[ia], b64[ib]
    best, best_ij = None, (0, 0)
    step = max(1, _PAIR_CHUNK // max(1, len(b64)))
    for start in range(0, len(a64), step):
        diff = np.abs(a64[start : start + step, None, :] - b64[None, :, :])
        d = diff.max(axis=2) * (1 << 32) + (diff**2).sum(axis=2)
        k = int(np.argmin(d))
        i, j = divmod(k, d.shape[1])
        if best is None or d[i, j] < best:
            best, best_ij = int(d[i, j]), (int(ia[start + i]), int(ib[j]))
    return best_ij


def chessboard_gap(a: np.ndarray, b: np.ndarray) -> int:
    """The least ``max(|dx|, |dy|)`` between a point of ``a`` and one of ``b`` ((N, 2), (M, 2)): one more than
    the pixels a straight bridge between them crosses outside both."""
    i, j = nearest_pair(a, b)
    return int(np.abs(a[i].astype(np.int64) - b[j]).max())


def box_gap(a: np.ndarray, b: np.ndarray) -> int:
    """Chessboard gap between the bounding boxes ``[x0, y0, x1, y1]`` of two outlines: a lower bound of
    :func:`chessboard_gap` that costs nothing."""
    return int(max(0, b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]))


def splice(polygon: np.ndarray, ring: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
    """``polygon`` with ``ring`` joined in by a zero-width bridge (module docstring); both (N, 2) int32, the
    result (N + M + 2, 2) int32.

    The bridge runs between their closest vertices, or, given ``anchor`` (the outline of ``polygon`` to bridge
    from, (K, 2)), between the closest vertices of ``anchor`` and ``ring``, starting at the first place the
    polygon passes through that vertex (any place would do: the polygon passes through it there).
    """
    if anchor is None:
        i, j = nearest_pair(polygon, ring)
    else:
        k, j = nearest_pair(anchor, ring)
        i = int(np.flatnonzero((polygon == anchor[k]).all(axis=1))[0])
    rolled = np.roll(ring, -j, axis=0)
    return np.concatenate([polygon[: i + 1], rolled, rolled[:1], polygon[i:]]).astype(np.int32)


def simplify_keeping(points: np.ndarray, keep: list[int], eps: float | None) -> tuple[np.ndarray, dict[int, int]]:
    """``cv2.approxPolyDP`` of a closed outline that keeps the vertices at the indices ``keep`` (bridge ends).

    Without ``keep`` the outline is simplified as a closed curve (a tolerance too large for it leaves 1 or 2
    vertices); with it, each stretch between two kept vertices as an open polyline, whose ends stay. ``eps``
    None leaves the outline as it is. Returns ``(vertices, {kept index: its index among the vertices})``.
    """
    n = len(points)
    if eps is None or (not keep and eps <= 0.0 and n < 4):
        return points, {k: k for k in keep}
    if not keep:
        return cv2.approxPolyDP(points.reshape(-1, 1, 2), eps, True).reshape(-1, 2).astype(np.int32), {}
    stops = set(keep)
    if len(stops) == 1 and n > 2:  # a loop from a vertex back to itself has no chord: split it at its far side
        stops.add(int(np.argmax(np.abs(points - points[keep[0]]).sum(axis=1))))
    ends = sorted(stops)
    parts, where, count = [], {}, 0
    for a, b in zip(ends, ends[1:] + [ends[0] + n]):
        stretch = points[np.arange(a, b + 1) % n]
        if len(stretch) > 2:
            stretch = cv2.approxPolyDP(stretch.reshape(-1, 1, 2), eps, False).reshape(-1, 2)
        if a in keep:
            where[a] = count
        parts.append(stretch[:-1])  # its last vertex is the next stretch's first
        count += len(stretch) - 1
    return np.concatenate(parts).astype(np.int32), where


@dataclass(frozen=True)
class JoinPlan:
    """Outlines (base first) and their bridges: outline ``i`` bridges from vertex ``ends[i][0]`` of outline
    ``partners[i]`` (< i) to its own vertex ``ends[i][1]``, the closest pair of the two (``ends[0]`` unused).
    The bridges are placed once, on the traced outlines, and kept through every simplification."""

    outlines: list[np.ndarray]
    partners: list[int]
    ends: list[tuple[int, int]]

    @classmethod
    def between(cls, outlines: list[np.ndarray], partners: list[int]) -> "JoinPlan":
        outlines = [np.asarray(o, dtype=np.int32).reshape(-1, 2) for o in outlines]
        ends = [(0, 0)] + [nearest_pair(outlines[partners[i]], outlines[i]) for i in range(1, len(outlines))]
        return cls(outlines, list(partners), ends)

    def polygon(self, eps: float | None = None) -> np.ndarray:
        """The joined polygon, every outline simplified at ``eps`` (None: as traced) with its bridge ends kept."""
        keep: list[list[int]] = [[] for _ in self.outlines]
        for i in range(1, len(self.outlines)):
            keep[self.partners[i]].append(self.ends[i][0])
            keep[i].append(self.ends[i][1])
        simple = [simplify_keeping(o, k, eps) for o, k in zip(self.outlines, keep)]
        polygon = simple[0][0]
        for i in range(1, len(self.outlines)):
            vertices, where = simple[self.partners[i]]
            at = vertices[where[self.ends[i][0]]]
            k = int(np.flatnonzero((polygon == at).all(axis=1))[0])  # the polygon passes through it there
            ring = np.roll(simple[i][0], -simple[i][1][self.ends[i][1]], axis=0)
            polygon = np.concatenate([polygon[: k + 1], ring, ring[:1], polygon[k:]])
        return polygon.astype(np.int32)


def join_rings(rings: list[np.ndarray]) -> np.ndarray:
    """One closed polygon from traced outlines: the first is the base, each next one bridged to the nearest
    outline before it (by chessboard gap)."""
    rings = [np.asarray(r, dtype=np.int32).reshape(-1, 2) for r in rings]
    partners = [0] + [min(range(i), key=lambda k: (chessboard_gap(rings[k], rings[i]), k))
                      for i in range(1, len(rings))]
    return JoinPlan.between(rings, partners).polygon()
