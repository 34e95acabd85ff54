"""Failure cases: phantom images a hand-bone model should not be trusted on, with their exact labels.

They are the test set of the quality control (``evaluator/qc``), never training data. Each is an option of
:func:`handseg.phantom.render.render` (``failure=None``, the default, draws exactly the plain phantom, byte for
byte). With a :class:`Failure` the same hand is drawn from the image's generator (the same draws in the same
order) and changed as its case says; the case's own draws come from the failure's generator:

* ``cut_fingers``: the hand moved up until the longest fingertip lies 22-40 mm beyond the top edge: the distal
  (and some middle) phalanges are cut by the frame or missing; their labels are clipped or left out;
* ``cast``: a plaster cast (a hollow shell 5-8 mm thick with a mesh texture) over the forearm, wrist and the
  bases of the metacarpals;
* ``plate``: a wrist fusion plate, 11-13 mm wide with 9 screws, from the radius's shaft over the carpals to the
  middle metacarpal;
* ``child``: a child's hand: 62-75% of the adult size in the image, carpal ossification centres at 45-60% of the
  adult carpals, open growth plates (a radiolucent line 1-1.5 mm wide across every phalanx's base, the finger
  metacarpals' heads, the thumb metacarpal's base, the distal radius and ulna), thinner, less dense bone;
* ``upside_down``: the image turned by 180 degrees (labels turned with it);
* ``mirrored``: the image mirrored top to bottom (fingers down, labels mirrored);
* ``blank``: an exposure without a hand (no labels);
* ``non_hand``: plain shapes of bone-like and tissue-like attenuation, not a hand (no labels).

A horizontally mirrored hand is not a case: it is the other hand, which the data set has anyway. Every failure
image records ``{"case", "bones"}``: the bones the case concerns (those cut, those under the cast or plate, all
29 for the cases that change the whole hand).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from handseg.format.classes import CARPALS, CLASSES, RAYS, ray_bones
from handseg.format.geometry import clip_polygon
from handseg.phantom.anatomy import Person, Skeleton
from handseg.phantom.extras import METAL, _fill, _rect
from handseg.phantom.placement import Frame
from handseg.phantom.shapes import blob_outline, place, polygon_area

CASES: dict[str, str] = {
    "cut_fingers": "fingers cut by the frame",
    "cast": "a plaster cast over wrist and forearm",
    "plate": "a wrist fusion plate across the carpals",
    "child": "a child's hand (small bones, open growth plates)",
    "upside_down": "the image upside down (turned 180 degrees)",
    "mirrored": "the image mirrored top to bottom",
    "blank": "a blank exposure, no hand",
    "non_hand": "plain shapes, not a hand",
}
WHOLE_HAND = ("child", "upside_down", "mirrored", "blank", "non_hand")  # cases that concern all 29 bones
MU_CAST = 0.45  # attenuation of 1 mm of plaster relative to 1 mm of cortical bone
COVERED = 0.2  # a bone concerns the cast or plate case when this share of it lies under it
DISTAL = ("finger-1", "finger-4", "finger-8", "finger-12", "finger-16")


def _poly_mask(points_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.rint(points_px).astype(np.int32).reshape(-1, 1, 2)], 1)
    return mask


def _chord(depth: np.ndarray, radius: float) -> np.ndarray:
    """Path length through a cylinder of ``radius`` at ``depth`` inside its edge (same units; 0 outside)."""
    d = np.clip(depth, 0.0, radius)
    return 2.0 * np.sqrt(np.maximum(d * (2.0 * radius - d), 0.0))


@dataclass
class Failure:
    """One failure case (a key of :data:`CASES`) with its own generator; the hooks below are called by
    :func:`handseg.phantom.render.render` and do nothing for the cases they do not concern."""

    case: str
    rng: np.random.Generator

    def __post_init__(self) -> None:
        if self.case not in CASES:
            raise ValueError(f"unknown failure case {self.case!r}; expected one of {', '.join(CASES)}")

    def person(self, person: Person) -> Person:
        """A child's anatomy: small carpal ossification centres, thinner and less dense bone."""
        if self.case != "child":
            return person
        shrink = float(self.rng.uniform(0.45, 0.6))
        length = {k: v * (shrink if k in CARPALS else 1.0) for k, v in person.length_jitter.items()}
        width = {k: v * (shrink if k in CARPALS else 1.0) for k, v in person.width_jitter.items()}
        return replace(person, length_jitter=length, width_jitter=width, density=0.8 * person.density,
                       cortex=0.8 * person.cortex)

    def reframe(self, frame: Frame, skeleton: Skeleton, size: int) -> Frame:
        """Move the fingertips out of the top edge (``cut_fingers``) or shrink the hand about the image's centre
        (``child``: a small hand on the same detector)."""
        if self.case == "cut_fingers":
            top = min(float(frame.apply(skeleton.bones[n])[:, 1].min()) for n in DISTAL)
            depth = float(self.rng.uniform(22.0, 40.0)) * frame.scale
            return replace(frame, offset=frame.offset - np.array([0.0, top + depth]))
        if self.case == "child":
            s = float(self.rng.uniform(0.62, 0.75))
            centre = np.array([0.5 * size, 0.4 * size])
            return Frame(matrix=frame.matrix * s, offset=centre + s * (frame.offset - centre), scale=frame.scale * s)
        return frame

    def growth_plates(self, bone: np.ndarray, skeleton: Skeleton, frame: Frame,
                      polygons: dict[str, np.ndarray]) -> None:
        """``child``: cut a radiolucent growth plate into each long bone of ``bone`` (H, W) float32, in place."""
        if self.case != "child":
            return
        width = max(1, int(round(float(self.rng.uniform(1.0, 1.5)) * frame.scale)))
        for name, (a, b, at) in _plate_lines(skeleton).items():
            if name not in polygons:
                continue
            centre = a + at * (b - a)
            along = (b - a) / max(np.linalg.norm(b - a), 1e-9)
            normal = np.array([-along[1], along[0]])
            half = 2.5 * skeleton.half_width[name]
            ends = frame.apply(np.stack([centre - half * normal, centre + half * normal]))
            _cut_line(bone, polygons[name], ends, width)

    def attenuation(self, attenuation: np.ndarray, skeleton: Skeleton, frame: Frame) -> np.ndarray:
        """Add a cast or a plate; replace the hand by nothing (``blank``) or by plain shapes (``non_hand``)."""
        size = attenuation.shape[0]
        if self.case == "cast":
            return attenuation + cast_layer(skeleton, frame, size, self.rng)
        if self.case == "plate":
            return attenuation + fusion_plate_layer(skeleton, frame, size, self.rng)
        if self.case == "blank":
            return np.zeros_like(attenuation)
        if self.case == "non_hand":
            return shapes_layer(size, frame.scale, self.rng)
        return attenuation

    def finish(self, image: np.ndarray, polygons: dict[str, np.ndarray], extra: np.ndarray | None,
               skeleton: Skeleton, frame: Frame) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
        """The final image and labels (turned, mirrored or emptied) and the case's record ``{"case", "bones"}``;
        ``extra``: the added attenuation (cast, plate) whose bones the case concerns."""
        size = image.shape[0]
        if self.case in ("blank", "non_hand"):
            polygons = {}
        elif self.case == "upside_down":
            image = np.ascontiguousarray(image[::-1, ::-1])
            polygons = {n: (size - 1) - p for n, p in polygons.items()}
        elif self.case == "mirrored":
            image = np.ascontiguousarray(image[::-1])
            polygons = {n: np.stack([p[:, 0], (size - 1) - p[:, 1]], axis=1).astype(np.int32)
                        for n, p in polygons.items()}
        if self.case in WHOLE_HAND:
            bones = list(CLASSES)
        elif self.case == "cut_fingers":
            bones = _cut_bones(skeleton, frame, size)
        else:
            bones = _covered_bones(polygons, extra)
        return image, polygons, {"case": self.case, "bones": bones}


def _plate_lines(skeleton: Skeleton) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Per long bone, (start, end, fraction): its growth plate crosses the axis start -> end (mm) at the
    fraction: the base of every phalanx and of the thumb metacarpal, the head of the finger metacarpals."""
    lines = {}
    for ray in RAYS:
        joints = skeleton.rays[ray]  # wrist -> tip joint centres
        for j, name in enumerate(ray_bones(ray)[::-1]):  # metacarpal first
            head_plate = j == 0 and ray != "thumb"
            lines[name] = (joints[j], joints[j + 1], 0.85 if head_plate else 0.15)
    s = skeleton.scale
    lines["Radius"] = (np.array([-8.0, -20.0]) * s, np.array([-8.0, -80.0]) * s, 0.32)
    lines["Ulna"] = (np.array([15.0, -28.0]) * s, np.array([15.0, -88.0]) * s, 0.18)
    return lines


def _cut_line(bone: np.ndarray, polygon: np.ndarray, ends_px: np.ndarray, width: int) -> None:
    """Darken ``bone`` along the segment ``ends_px`` (2, 2) (x, y), inside ``polygon`` only."""
    x0, y0 = np.maximum(np.floor(ends_px.min(0)).astype(int) - width, 0)
    x1, y1 = np.minimum(np.ceil(ends_px.max(0)).astype(int) + width + 1, bone.shape[::-1])
    if x0 >= x1 or y0 >= y1:
        return
    line = np.zeros((y1 - y0, x1 - x0), np.uint8)
    a, b = (tuple(int(v) for v in np.rint(p - (x0, y0))) for p in ends_px)
    cv2.line(line, a, b, 1, width, cv2.LINE_8)
    inside = _poly_mask(polygon - (x0, y0), line.shape)
    bone[y0:y1, x0:x1][(line & inside) > 0] *= np.float32(0.12)


def cast_layer(skeleton: Skeleton, frame: Frame, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 attenuation of a plaster cast: a hollow shell around forearm, wrist and the
    metacarpal bases, seen side-on, with a mesh texture."""
    s = skeleton.scale
    forearm = np.vstack([skeleton.bones["Radius"], skeleton.bones["Ulna"]])
    forearm = forearm[forearm[:, 1] > -300.0 * s]
    bases = [skeleton.rays[r][0] + 0.45 * (skeleton.rays[r][1] - skeleton.rays[r][0]) for r in RAYS]
    core = np.vstack([forearm] + [skeleton.bones[c] for c in CARPALS] + [np.array(bases)])
    hull = cv2.convexHull(np.rint(frame.apply(core)).astype(np.int32).reshape(-1, 1, 2))
    inside = np.ones((size, size), np.uint8)
    cv2.fillConvexPoly(inside, hull, 0)
    outside = cv2.distanceTransform(inside, cv2.DIST_L2, 5)  # px from the hull
    pad_mm = float(rng.uniform(9.0, 13.0))  # soft tissue and padding under the cast: its outer surface
    shell = (outside / frame.scale) <= pad_mm
    depth = cv2.distanceTransform(shell.astype(np.uint8), cv2.DIST_L2, 5) / frame.scale  # mm inside the surface
    radius = float(depth.max())
    wall = float(rng.uniform(5.0, 8.0))
    path = _chord(depth, radius) - _chord(depth - wall, radius - wall)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / np.float32(frame.scale)
    period = float(rng.uniform(2.5, 4.0))
    mesh = 1.0 + 0.12 * np.cos(2 * np.pi * (xx + yy) / period) * np.cos(2 * np.pi * (xx - yy) / period)
    return (MU_CAST * path * mesh * shell).astype(np.float32)


def fusion_plate_layer(skeleton: Skeleton, frame: Frame, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 metal of a wrist fusion plate from the radius's shaft to the middle metacarpal,
    with 9 screws across it."""
    layer = np.zeros((size, size), np.float32)
    s = skeleton.scale
    start = np.array([-12.0, -95.0]) * s
    end = skeleton.bones["finger-11"].mean(axis=0)
    axis = (end - start) / np.linalg.norm(end - start)
    length = float(np.linalg.norm(end - start)) + 12.0 * s
    width = float(rng.uniform(11.0, 13.0)) * s
    centre = 0.5 * (start + end)
    _fill(layer, _rect(centre, axis, length, width), frame, 1.6 * METAL)
    normal = np.array([-axis[1], axis[0]])
    for t in np.linspace(-0.42, 0.42, 9):
        screw = centre + axis * t * length
        _fill(layer, _rect(screw, normal, 1.3 * width, 2.6 * s), frame, 3.0 * METAL)
    return layer


def shapes_layer(size: int, px_per_mm: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) float32 attenuation of 6-10 plain shapes (solid blobs and bars, 4-40 mm, each projected as a
    cylinder) over a thick tissue-like slab: an X-ray of something that is not a hand."""
    layer = np.zeros((size, size), np.float32)
    slab = blob_outline(*(rng.uniform(0.3, 0.45, 2) * size), harmonics=((0.08, rng.uniform(0, 6)),))
    layer += 2.5 * _poly_mask(slab + 0.5 * size, (size, size)).astype(np.float32)
    for _ in range(int(rng.integers(6, 11))):
        bar = rng.random() < 0.4
        rx, ry = (rng.uniform(2.0, 5.0), rng.uniform(20.0, 40.0)) if bar else rng.uniform(4.0, 20.0, 2)
        outline = place(blob_outline(rx, ry, square=4.0 if bar else 2.0) * px_per_mm,
                        rng.uniform(0.15, 0.85, 2) * size, float(rng.uniform(0, 180)))
        inside = _poly_mask(outline, (size, size))
        depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5) / px_per_mm
        layer += (0.8 * _chord(depth, float(min(rx, ry)))).astype(np.float32)
    return layer


def _cut_bones(skeleton: Skeleton, frame: Frame, size: int) -> list[str]:
    """Hand bones (not the forearm, which always runs out of the bottom edge) with less than 98% of their
    outline's area inside the frame."""
    out = []
    for name in CLASSES[:-2]:
        outline = frame.apply(skeleton.bones[name])
        if polygon_area(clip_polygon(outline, 0.0, float(size - 1))) < 0.98 * polygon_area(outline):
            out.append(name)
    return out


def _covered_bones(polygons: dict[str, np.ndarray], extra: np.ndarray | None) -> list[str]:
    """Bones with at least :data:`COVERED` of their area under the added attenuation (cast, plate)."""
    if extra is None:
        return []
    out = []
    for name, poly in polygons.items():
        x0, y0 = poly.min(0)
        x1, y1 = poly.max(0) + 1
        mask = _poly_mask(poly - (x0, y0), (y1 - y0, x1 - x0)) > 0
        if mask.any() and (extra[y0:y1, x0:x1][mask] > 0.5).mean() >= COVERED:
            out.append(name)
    return out
