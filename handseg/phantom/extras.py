"""Metal in the beam: finger rings, a distal-radius plate with screws, a scaphoid screw, the L/R marker.

Each is drawn into a (H, W) float32 layer of attenuation (mm of bone-equivalent) that the renderer adds on
top of bone and soft tissue. None of them is a class: the bone annotations stay the bones' outlines.
"""

from __future__ import annotations

import cv2
import numpy as np

from handseg.phantom.anatomy import Skeleton
from handseg.phantom.placement import Frame
from handseg.phantom.shapes import direction

METAL = 9.0  # attenuation of 1 mm of metal, in bone-equivalent mm
P_RING, P_PLATE, P_SCREW, P_MARKER = 0.15, 0.07, 0.05, 0.7


def _rect(centre: np.ndarray, axis: np.ndarray, length: float, width: float) -> np.ndarray:
    """Corners (4, 2) of a rectangle centred at ``centre`` with its long side along unit ``axis``."""
    normal = np.array([-axis[1], axis[0]])
    a, n = 0.5 * length * axis, 0.5 * width * normal
    return np.array([centre - a - n, centre + a - n, centre + a + n, centre - a + n])


def _fill(layer: np.ndarray, corners_mm: np.ndarray, frame: Frame, value: float) -> None:
    """Add ``value`` inside the polygon ``corners_mm`` (anatomy frame) to ``layer``, antialiased."""
    pts = np.rint(frame.apply(corners_mm) * 16).astype(np.int32).reshape(-1, 1, 2)
    stamp = np.zeros(layer.shape, np.uint8)  # OpenCV antialiases 8-bit images only
    cv2.fillPoly(stamp, [pts], 255, cv2.LINE_AA, shift=4)
    layer += stamp * np.float32(value / 255.0)


def _bone_axis(outline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and unit long axis of a bone outline (principal component of its points)."""
    centre = outline.mean(axis=0)
    _, _, vt = np.linalg.svd(outline - centre, full_matrices=False)
    axis = vt[0] if vt[0][1] >= 0 else -vt[0]
    return centre, axis


def add_ring(layer: np.ndarray, skeleton: Skeleton, frame: Frame, rng: np.random.Generator) -> None:
    """A metal ring on a proximal phalanx: a band across the finger with brighter sides (seen edge-on)."""
    ray = "ring" if rng.random() < 0.5 else str(rng.choice(["index", "middle", "little"]))
    joints = skeleton.rays[ray]
    base, head = joints[1], joints[2]
    axis = (head - base) / np.linalg.norm(head - base)
    centre = base + rng.uniform(0.2, 0.45) * (head - base)
    outer = skeleton.ray_width[ray] + rng.uniform(7.0, 10.0)
    band = rng.uniform(2.5, 5.0)
    thick = rng.uniform(1.2, 2.0)
    normal = np.array([-axis[1], axis[0]])
    _fill(layer, _rect(centre, normal, outer, band), frame, 2.0 * thick * METAL)
    for s in (-1.0, 1.0):
        side = centre + s * normal * (0.5 * outer - 0.5 * thick)
        _fill(layer, _rect(side, normal, thick, band), frame, 3.0 * thick * METAL)


def add_plate(layer: np.ndarray, skeleton: Skeleton, frame: Frame, rng: np.random.Generator) -> None:
    """A volar plate on the distal radius with 3-5 screws."""
    radius = skeleton.bones["Radius"]
    near = radius[radius[:, 1] > -90.0]
    top = near[:, 1].max()
    axis = direction(rng.normal(0.0, 4.0))
    length = rng.uniform(40.0, 60.0)
    cx = near[:, 0].mean() + rng.normal(0.0, 1.5)
    centre = np.array([cx, top - 6.0 - 0.5 * length])
    width = rng.uniform(9.0, 12.0)
    _fill(layer, _rect(centre, axis, length, width), frame, 1.6 * METAL)
    for k in range(int(rng.integers(3, 6))):
        t = (k + 0.5) / 5.0 - 0.5
        screw = centre + axis * t * length * 0.9
        _fill(layer, _rect(screw, np.array([1.0, 0.0]), rng.uniform(12.0, 18.0), 2.4), frame, 3.0 * METAL)


def add_scaphoid_screw(layer: np.ndarray, skeleton: Skeleton, frame: Frame, rng: np.random.Generator) -> None:
    """A compression screw along the scaphoid's long axis (fracture fixation)."""
    centre, axis = _bone_axis(skeleton.bones["Scaphoid"])
    _fill(layer, _rect(centre, axis, rng.uniform(16.0, 22.0), 2.8), frame, 3.0 * METAL)


def add_marker(layer: np.ndarray, side: str, frame: Frame, size: int, rng: np.random.Generator) -> None:
    """The lead side marker (``R`` or ``L``) in a top corner."""
    height = int(round(size * rng.uniform(0.035, 0.05)))
    scale = height / 22.0  # Hershey simplex capitals are about 22 px high at scale 1
    thick = max(1, int(round(height / 7)))
    (w, h), _ = cv2.getTextSize(side, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    margin = int(round(size * 0.03))
    x = margin if rng.random() < 0.5 else size - margin - w
    y = margin + h
    stamp = np.zeros(layer.shape, np.uint8)
    cv2.putText(stamp, side, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thick, cv2.LINE_AA)
    layer += stamp * np.float32(2.0 * METAL / 255.0)


def metal_layer(
    skeleton: Skeleton, frame: Frame, size: int, side: str, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, bool]]:
    """(size, size) float32 metal attenuation and which items were drawn."""
    layer = np.zeros((size, size), np.float32)
    drawn = {"ring": False, "plate": False, "screw": False, "marker": False}
    draws = rng.random(4)
    if draws[0] < P_RING:
        add_ring(layer, skeleton, frame, rng)
        drawn["ring"] = True
    if draws[1] < P_PLATE:
        add_plate(layer, skeleton, frame, rng)
        drawn["plate"] = True
    if draws[2] < P_SCREW:
        add_scaphoid_screw(layer, skeleton, frame, rng)
        drawn["screw"] = True
    if draws[3] < P_MARKER:
        add_marker(layer, side, frame, size, rng)
        drawn["marker"] = True
    return layer, drawn

