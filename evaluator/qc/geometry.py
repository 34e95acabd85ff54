"""The geometry of one image's bone masks: areas, centroids, pieces, overlaps and the hand's own frame.

Pure functions on :class:`~handseg.format.class_masks.ClassMasks` (each class in its box, so the cost follows
the bones, not the image). The hand frame makes positions comparable between hands of any size, angle and side:
its origin is the centroid of the carpal bones, its axis points to the centroid of the four fingers' bones, its
lateral direction points to the thumb's side (so right and left hands share one frame), and its unit is the
distance from the origin to the fingers' centroid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import ANATOMY, CLASSES

CARPAL_IDX = [b.index for b in ANATOMY.values() if b.group == "carpal"]
FINGER_IDX = [b.index for b in ANATOMY.values() if b.group == "finger" and b.ray != "thumb"]
RADIAL_IDX = [b.index for b in ANATOMY.values() if b.ray in ("thumb", "index")]  # the thumb's side of the hand
ULNAR_IDX = [b.index for b in ANATOMY.values() if b.ray in ("ring", "little")]
HAND_IDX = [c for c in range(len(CLASSES)) if CLASSES[c] not in ("Radius", "Ulna")]
PIECE_SHARE = 0.05  # a piece counts when it holds this share of its class's pixels


def count_true(mask: torch.Tensor, rows: int | None = None) -> int | np.ndarray:
    """Pixels set in a bool tensor (or, with ``rows``, per row of it reshaped to (rows, -1)). On the CPU through
    numpy: torch's reductions of booleans are several times slower, and much slower on a busy machine."""
    if mask.device.type != "cpu":
        flat = mask if rows is None else mask.reshape(rows, -1)
        counted = torch.count_nonzero(flat) if rows is None else torch.count_nonzero(flat, dim=1)
        return int(counted) if rows is None else counted.cpu().numpy()
    array = mask.numpy()
    return int(np.count_nonzero(array)) if rows is None else np.count_nonzero(array.reshape(rows, -1), axis=1)


@dataclass(frozen=True)
class BoneGeometry:
    """Per class (CLASSES order) of one image: ``area`` (C,) float64 pixels, ``centroid`` (C, 2) float64 (y, x)
    in image pixels (NaN where the class is empty), ``on_border`` (C,) bool: its box touches the image's edge;
    ``hw``: the image's (height, width)."""

    area: np.ndarray
    centroid: np.ndarray
    on_border: np.ndarray
    hw: tuple[int, int]

    @property
    def present(self) -> np.ndarray:
        return self.area > 0


def bone_geometry(masks: ClassMasks) -> BoneGeometry:
    """Area, centroid and border contact of every class of ``masks`` (moments of each box)."""
    n = len(masks)
    area, centroid = np.zeros(n), np.full((n, 2), np.nan)
    on_border = np.zeros(n, dtype=bool)
    for c, (box, mask) in enumerate(zip(masks.boxes, masks.masks)):
        if box is None:
            continue
        m = cv2.moments(mask.cpu().numpy().astype(np.uint8), binaryImage=True)
        if m["m00"] <= 0:
            continue
        area[c] = m["m00"]
        centroid[c] = (box[0] + m["m01"] / m["m00"], box[1] + m["m10"] / m["m00"])
        on_border[c] = box[0] == 0 or box[1] == 0 or box[2] == masks.height or box[3] == masks.width
    return BoneGeometry(area, centroid, on_border, (masks.height, masks.width))


def pieces(masks: ClassMasks) -> tuple[np.ndarray, np.ndarray]:
    """Per class: (share of its pixels in its largest 8-connected piece (C,) float64, 1 for an empty class;
    number of pieces holding at least :data:`PIECE_SHARE` of its pixels (C,) int64)."""
    share, count = np.ones(len(masks)), np.zeros(len(masks), dtype=np.int64)
    for c, mask in enumerate(masks.masks):
        if mask is None:
            continue
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask.cpu().numpy().astype(np.uint8), connectivity=8)
        sizes = stats[1:, cv2.CC_STAT_AREA]
        if len(sizes):
            share[c] = sizes.max() / sizes.sum()
            count[c] = int((sizes >= PIECE_SHARE * sizes.sum()).sum())
    return share, count


def overlaps(masks: ClassMasks, areas: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(i, j): |A_i and A_j| / min(|A_i|, |A_j|)}`` for every pair i < j of classes that share pixels;
    ``areas`` (C,): the classes' pixel counts."""
    out = {}
    for i, (bi, mi) in enumerate(zip(masks.boxes, masks.masks)):
        if bi is None:
            continue
        for j in range(i + 1, len(masks)):
            bj, mj = masks.boxes[j], masks.masks[j]
            if bj is None:
                continue
            y0, x0, y1, x1 = max(bi[0], bj[0]), max(bi[1], bj[1]), min(bi[2], bj[2]), min(bi[3], bj[3])
            if y0 >= y1 or x0 >= x1:
                continue
            a = mi[y0 - bi[0]:y1 - bi[0], x0 - bi[1]:x1 - bi[1]]
            b = mj[y0 - bj[0]:y1 - bj[0], x0 - bj[1]:x1 - bj[1]]
            shared = count_true(a & b)
            if shared:
                out[(i, j)] = shared / max(min(areas[i], areas[j]), 1)
    return out


@dataclass(frozen=True)
class HandFrame:
    """The hand's own frame (module docstring): ``origin``, ``axis`` and ``lateral`` as (y, x) in image pixels
    (unit vectors for the last two), ``scale`` in pixels; ``angle``: the axis in degrees counter-clockwise from
    the image's x axis as seen on screen (90: fingers up, as :func:`handseg.inference.hand_norm.hand_angle`)."""

    origin: np.ndarray
    axis: np.ndarray
    lateral: np.ndarray
    scale: float
    angle: float


def _mean(centroid: np.ndarray, idx: list[int]) -> np.ndarray | None:
    pts = centroid[idx]
    pts = pts[~np.isnan(pts[:, 0])]
    return pts.mean(axis=0) if len(pts) else None


def hand_frame(geometry: BoneGeometry) -> HandFrame | None:
    """The hand frame of these bones, or None without a carpal or a finger bone (or with both in one spot).
    The lateral direction points to the thumb and index finger's side (from the ring and little fingers'), or,
    where that cannot be told, from the Ulna to the Radius."""
    origin, fingers = _mean(geometry.centroid, CARPAL_IDX), _mean(geometry.centroid, FINGER_IDX)
    if origin is None or fingers is None:
        return None
    along = fingers - origin
    scale = float(np.hypot(*along))
    if scale < 1.0:
        return None
    axis = along / scale
    lateral = np.array([-axis[1], axis[0]])
    radial, ulnar = _mean(geometry.centroid, RADIAL_IDX), _mean(geometry.centroid, ULNAR_IDX)
    if radial is None or ulnar is None:
        radial, ulnar = (geometry.centroid[CLASSES.index(n)] for n in ("Radius", "Ulna"))
    side = float(np.dot(radial - ulnar, lateral)) if not (np.isnan(radial).any() or np.isnan(ulnar).any()) else 1.0
    if side < 0:
        lateral = -lateral
    angle = math.degrees(math.atan2(-axis[0], axis[1]))  # rows grow downwards: up on screen is -y
    return HandFrame(origin, axis, lateral, scale, angle)


def hand_coordinates(geometry: BoneGeometry, frame: HandFrame) -> np.ndarray:
    """(C, 2) float64 (along the axis, towards the thumb's side) of every centroid in hand-frame units (NaN for
    an empty class)."""
    rel = geometry.centroid - frame.origin
    return np.stack([rel @ frame.axis, rel @ frame.lateral], axis=1) / frame.scale
