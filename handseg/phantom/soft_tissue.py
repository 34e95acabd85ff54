"""Soft-tissue thickness of the hand and forearm, in millimetres, for the X-ray renderer.

The silhouette is grown around a core made of the palm (hull of carpals and metacarpals), one capsule per
finger along its joint centres and the forearm (hull of radius and ulna). Thickness rises from the skin
edge like a cylinder's chord and is thicker over the palm and much thicker over the forearm. It is smooth,
so it is built on a coarse grid and upsampled.
"""

from __future__ import annotations

import cv2
import numpy as np

from handseg.format.classes import CARPALS, RAYS, ray_bones
from handseg.phantom.anatomy import Skeleton
from handseg.phantom.placement import Frame

SKIN_MM = 5.5  # soft tissue beyond the bony core (finger pulp, palm and forearm sides)
FINGER_RADIUS_MM = 7.5  # a finger's soft tissue reaches full thickness this far inside the skin
PALM_EXTRA_MM = 12.0
FOREARM_EXTRA_MM = 24.0


def _hull_mask(shape: tuple[int, int], points_px: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.rint(points_px).astype(np.int32).reshape(-1, 1, 2))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def _chord(depth: np.ndarray, radius: float) -> np.ndarray:
    """Path length through a cylinder of ``radius`` at ``depth`` inside its edge (same units)."""
    d = np.minimum(depth, radius)
    return 2.0 * np.sqrt(np.maximum(d * (2.0 * radius - d), 0.0))


def soft_tissue_mm(skeleton: Skeleton, frame: Frame, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 soft-tissue thickness in mm (0 outside the hand and forearm)."""
    q = max(1, int(round(size / 256)))
    low = (size + q - 1) // q
    mm = frame.scale / q  # low-grid pixels per mm
    to_low = lambda pts: (frame.apply(pts) + 0.5) / q - 0.5  # noqa: E731
    shape = (low, low)

    # Palm: carpals, the finger metacarpals and the thumb's metacarpal base (the thenar eminence).
    palm_names = list(CARPALS) + [ray_bones(r)[-1] for r in RAYS[1:]]
    thumb = skeleton.rays["thumb"]
    thenar = thumb[0] + np.linspace(0.0, 0.45, 4)[:, None] * (thumb[1] - thumb[0])
    palm_pts = np.vstack([skeleton.bones[n] for n in palm_names] + [thenar])
    palm = _hull_mask(shape, to_low(palm_pts))
    # Forearm: radius and ulna, widened by the muscles on either side.
    forearm_pts = np.vstack([skeleton.bones["Radius"], skeleton.bones["Ulna"]])
    forearm_pts = forearm_pts[forearm_pts[:, 1] < -25.0 * skeleton.scale]
    centre_x = forearm_pts[:, 0].mean()
    widen = 1.0 + 0.35 * np.clip((-forearm_pts[:, 1] / skeleton.scale - 30.0) / 70.0, 0.0, 1.0)
    forearm_pts[:, 0] = centre_x + (forearm_pts[:, 0] - centre_x) * widen
    forearm = _hull_mask(shape, to_low(np.vstack([forearm_pts, skeleton.bones["Lunate"]])))

    core = np.maximum(palm, forearm)
    for ray in RAYS:
        joints = to_low(skeleton.rays[ray])
        start = 0 if ray == "thumb" else 1  # fingers start at the metacarpal head, the thumb at its base
        width = skeleton.ray_width[ray] * rng.uniform(0.85, 1.05) * mm
        pts = np.rint(joints[start:] * 16).astype(np.int32)
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(core, tuple(int(v) for v in a), tuple(int(v) for v in b), 1,
                     max(1, int(round(width))), cv2.LINE_8, shift=4)
    outside = cv2.distanceTransform((core == 0).astype(np.uint8), cv2.DIST_L2, 5)
    skin = SKIN_MM * rng.uniform(0.85, 1.2) * mm
    silhouette = (outside <= skin).astype(np.uint8)
    depth = cv2.distanceTransform(silhouette, cv2.DIST_L2, 5) / mm
    thickness = _chord(depth, FINGER_RADIUS_MM)

    sigma = 6.0 * mm
    palm_w = cv2.GaussianBlur(palm.astype(np.float32), (0, 0), sigma)
    fore_w = cv2.GaussianBlur(forearm.astype(np.float32), (0, 0), 4.0 * sigma)
    extra = PALM_EXTRA_MM * palm_w + FOREARM_EXTRA_MM * fore_w
    thickness = (thickness + extra * np.sqrt(np.minimum(depth / 12.0, 1.0))) * silhouette
    thickness = cv2.GaussianBlur(thickness.astype(np.float32), (0, 0), max(0.6, 0.8 * mm))
    return cv2.resize(thickness, (low * q, low * q), interpolation=cv2.INTER_LINEAR)[:size, :size]
