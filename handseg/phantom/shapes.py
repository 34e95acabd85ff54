"""Outline primitives for phantom bones, in millimetres, in a bone's own frame.

Long bones (phalanges, metacarpals) lie along +y from the base (y = 0) to the head (y = length), x across.
Carpal bones are rounded blobs centred on the origin. All outlines are closed (N, 2) float64 arrays of (x, y)
without the repeated first point.
"""

from __future__ import annotations

import numpy as np

# Width profiles along a long bone: (t, half-width factor) control points, t = 0 at the base, 1 at the head.
# Phalanges have a flared base, a waist and a flared head (condyles); metacarpals a boxy base, a thin shaft
# and a round head; distal phalanges taper to a tuft.
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "phalanx": ((0.0, 0.07, 0.3, 0.55, 0.8, 0.94, 1.0), (0.92, 1.0, 0.7, 0.6, 0.68, 0.86, 0.82)),
    "distal": ((0.0, 0.08, 0.35, 0.62, 0.82, 0.93, 1.0), (0.95, 1.0, 0.68, 0.5, 0.5, 0.62, 0.56)),
    "metacarpal": ((0.0, 0.1, 0.3, 0.6, 0.82, 0.93, 1.0), (0.92, 0.85, 0.62, 0.58, 0.68, 0.93, 0.95)),
}
# Height of the rounded head cap and depth of the (concave) base, in units of the bone's width.
HEAD_CAP = {"phalanx": 0.22, "distal": 0.28, "metacarpal": 0.42}
BASE_DIP = {"phalanx": 0.08, "distal": 0.06, "metacarpal": -0.05}


def _smooth(values: np.ndarray, passes: int = 2) -> np.ndarray:
    """Edge-preserving 1-2-1 smoothing of a 1-D profile, ``passes`` times."""
    v = values.astype(np.float64)
    for _ in range(passes):
        v = np.concatenate([v[:1], 0.25 * v[:-2] + 0.5 * v[1:-1] + 0.25 * v[2:], v[-1:]])
    return v


def long_bone_outline(length: float, width: float, kind: str, n_side: int = 22, n_cap: int = 9) -> np.ndarray:
    """Outline of a phalanx / distal phalanx / metacarpal: (2 * n_side + 2 * n_cap, 2) float64 in mm.

    ``width`` is the widest part (base or head); the shaft narrows to the profile's waist.
    """
    ts, fs = PROFILES[kind]
    cap = HEAD_CAP[kind] * width
    dip = BASE_DIP[kind] * width
    shaft = max(length - cap - max(-dip, 0.0), 0.3 * length)
    t = np.linspace(0.0, 1.0, n_side)
    half = 0.5 * width * _smooth(np.interp(t, ts, fs))
    y = t * shaft + max(-dip, 0.0)
    right = np.stack([half, y], axis=1)
    a = np.linspace(0.0, np.pi, n_cap + 2)[1:-1]
    head = np.stack([half[-1] * np.cos(a), y[-1] + cap * np.sin(a)], axis=1)
    left = np.stack([-half[::-1], y[::-1]], axis=1)
    # Base: concave articular surface for phalanges (dip > 0 goes into the bone), convex for metacarpals.
    b = np.linspace(np.pi, 2.0 * np.pi, n_cap + 2)[1:-1]
    base = np.stack([half[0] * np.cos(b), y[0] - dip * np.sin(b)], axis=1)
    return np.concatenate([right, head, left, base])


def blob_outline(
    rx: float,
    ry: float,
    harmonics: tuple[tuple[float, float], ...] = (),
    bend: float = 0.0,
    square: float = 2.0,
    n: int = 48,
) -> np.ndarray:
    """A rounded blob: ellipse with radii (rx, ry) in mm, radius modulated by ``harmonics``.

    ``harmonics`` are (amplitude, phase) of the 2nd, 3rd, ... radial harmonic (amplitude relative to the
    radius); ``bend`` curves the blob along x (kidney shapes such as the scaphoid); ``square`` > 2 makes a
    superellipse (boxier, like the packed carpals). Returns (n, 2) float64.
    """
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    r = np.ones_like(a)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        r += amp * np.cos(k * a + phase)
    e = 2.0 / square
    x = rx * r * np.sign(np.cos(a)) * np.abs(np.cos(a)) ** e
    y = ry * r * np.sign(np.sin(a)) * np.abs(np.sin(a)) ** e
    x = x + bend * (y / max(ry, 1e-6)) ** 2 * rx
    return np.stack([x, y], axis=1)


def chaikin(points: np.ndarray, iterations: int = 2, closed: bool = True) -> np.ndarray:
    """Chaikin corner cutting: a smooth outline from a control polygon (N, 2) -> (~N * 2**iterations, 2)."""
    p = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        q = np.roll(p, -1, axis=0) if closed else p[1:]
        a = p if closed else p[:-1]
        cut = np.empty((2 * len(a), 2))
        cut[0::2] = 0.75 * a + 0.25 * q
        cut[1::2] = 0.25 * a + 0.75 * q
        p = cut if closed else np.concatenate([p[:1], cut, p[-1:]])
    return p


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a closed polygon (N, 2), in squared units of its coordinates."""
    p = np.asarray(points, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def rotation(deg: float) -> np.ndarray:
    """2x2 rotation matrix; positive angles turn +y towards +x (clockwise in a y-up frame)."""
    r = np.deg2rad(deg)
    c, s = np.cos(r), np.sin(r)
    return np.array([[c, s], [-s, c]])


def place(outline: np.ndarray, origin: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotate a local outline by ``angle_deg`` (see :func:`rotation`) and move its origin to ``origin``."""
    return outline @ rotation(angle_deg).T + np.asarray(origin, dtype=np.float64)


def direction(angle_deg: float) -> np.ndarray:
    """Unit vector of a bone axis at ``angle_deg`` from +y towards +x."""
    r = np.deg2rad(angle_deg)
    return np.array([np.sin(r), np.cos(r)])
