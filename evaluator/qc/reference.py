"""What training images show of the anatomy: the range each QC signal is judged against.

From the labels of the training images (never the validation or test images, never the failure cases):

* each hand bone's area relative to the hand: ``log(area) - log(hand size)``, mean and spread per bone, where the
  hand size of an image is the median over its bones of ``area / typical share`` (robust to a missing or a
  swollen bone);
* each bone's position in the hand frame (:mod:`evaluator.qc.geometry`), mean and spread per bone and axis;
* the largest overlap of every pair of bones that overlap in training (``|A and B| / min(|A|, |B|)``);
* the hand axis's mean angle and the largest deviation from it.

Labels are rasterised at :data:`SIDE` pixels (areas and positions are ratios, so the scale does not matter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from evaluator.qc.geometry import HAND_IDX, BoneGeometry, bone_geometry, hand_coordinates, hand_frame, overlaps
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize

SIDE = 512
MIN_LOG_SD = 0.1  # floor of a bone's area spread (log units): predicted areas of small bones vary by ~10%
MIN_POSITION_SD = 0.02  # floor of a position spread (hand-frame units)


@dataclass(frozen=True)
class AnatomyReference:
    """Per class (CLASSES order): ``area_mean``/``area_sd`` (C,) of the log area share (NaN for the forearm,
    whose visible length depends on the framing), ``position_mean``/``position_sd`` (C, 2); ``overlap_max``:
    ``"A|B"`` (CLASSES order) -> the largest overlap seen; ``angle_mean``, ``angle_spread`` in degrees."""

    area_mean: np.ndarray
    area_sd: np.ndarray
    position_mean: np.ndarray
    position_sd: np.ndarray
    overlap_max: dict[str, float] = field(default_factory=dict)
    angle_mean: float = 90.0
    angle_spread: float = 0.0
    n_images: int = 0

    def overlap_limit(self, i: int, j: int) -> float:
        """The largest overlap of classes i < j in training (0 for a pair that never overlaps)."""
        return self.overlap_max.get(f"{CLASSES[i]}|{CLASSES[j]}", 0.0)

    def to_dict(self) -> dict:
        """JSON-ready: ``area_log_share`` class -> [mean, sd] (null for the forearm), ``position`` class ->
        [along mean, across mean, along sd, across sd], ``overlap_max``, the angle and the image count."""
        def num(v: float) -> float | None:
            return None if math.isnan(v) else round(float(v), 5)
        return {"n_images": self.n_images, "angle_mean": round(self.angle_mean, 3),
                "angle_spread": round(self.angle_spread, 3),
                "area_log_share": {c: None if math.isnan(self.area_mean[k]) else
                                   [num(self.area_mean[k]), num(self.area_sd[k])] for k, c in enumerate(CLASSES)},
                "position": {c: [num(v) for v in (*self.position_mean[k], *self.position_sd[k])]
                             for k, c in enumerate(CLASSES)},
                "overlap_max": {k: round(v, 4) for k, v in sorted(self.overlap_max.items())}}

    @classmethod
    def from_dict(cls, data: dict) -> "AnatomyReference":
        """Read :meth:`to_dict`'s form back (a missing key or class raises KeyError, a bad value ValueError)."""
        area = [data["area_log_share"][c] for c in CLASSES]
        pos = np.array([[np.nan if v is None else float(v) for v in data["position"][c]] for c in CLASSES])
        if pos.shape != (len(CLASSES), 4):
            raise ValueError("position: expected 4 numbers per class")
        return cls(area_mean=np.array([np.nan if a is None else float(a[0]) for a in area]),
                   area_sd=np.array([np.nan if a is None else float(a[1]) for a in area]),
                   position_mean=pos[:, :2], position_sd=pos[:, 2:],
                   overlap_max={str(k): float(v) for k, v in data.get("overlap_max", {}).items()},
                   angle_mean=float(data["angle_mean"]), angle_spread=float(data["angle_spread"]),
                   n_images=int(data.get("n_images", 0)))


def hand_log_size(geometry: BoneGeometry, area_mean: np.ndarray) -> float | None:
    """log of the hand's size: the median over present hand bones of ``log(area) - typical log share``."""
    present = [c for c in HAND_IDX if geometry.area[c] > 0 and not math.isnan(area_mean[c])]
    if not present:
        return None
    return float(np.median([math.log(geometry.area[c]) - area_mean[c] for c in present]))


def area_residuals(geometry: BoneGeometry, area_mean: np.ndarray) -> np.ndarray:
    """(C,) log area minus the hand's log size minus the bone's typical log share (NaN where not judged)."""
    size = hand_log_size(geometry, area_mean)
    out = np.full(len(CLASSES), np.nan)
    if size is None:
        return out
    for c in HAND_IDX:
        if geometry.area[c] > 0 and not math.isnan(area_mean[c]):
            out[c] = math.log(geometry.area[c]) - size - area_mean[c]
    return out


def label_masks(polygons: Sequence[np.ndarray], image_hw: tuple[int, int]) -> ClassMasks:
    """An image's labels rasterised at :data:`SIDE` pixels on its longer side, each class in its box."""
    scale = SIDE / max(image_hw)
    out_hw = (max(1, round(image_hw[0] * scale)), max(1, round(image_hw[1] * scale)))
    return ClassMasks.from_dense(rasterize(list(polygons), image_hw, out_hw))


def fit_reference(images: Iterable[ClassMasks]) -> AnatomyReference:
    """The reference from the label masks of the training images (module docstring)."""
    geometries, pair_max = [], {}
    for masks in images:
        geometries.append(bone_geometry(masks))
        for (i, j), ratio in overlaps(masks, geometries[-1].area).items():
            key = f"{CLASSES[i]}|{CLASSES[j]}"
            pair_max[key] = max(pair_max.get(key, 0.0), ratio)
    if not geometries:
        raise ValueError("no training images to build the anatomy reference from")
    shares = np.full((len(geometries), len(CLASSES)), np.nan)
    for k, g in enumerate(geometries):
        hand = g.area[HAND_IDX].sum()
        for c in HAND_IDX:
            if g.area[c] > 0 and hand > 0:
                shares[k, c] = math.log(g.area[c] / hand)
    area_mean, area_sd = np.full(len(CLASSES), np.nan), np.full(len(CLASSES), np.nan)
    area_mean[HAND_IDX] = np.nanmean(shares[:, HAND_IDX], axis=0)  # the forearm's visible area is the framing's
    residuals = np.stack([area_residuals(g, area_mean) for g in geometries])
    area_sd[HAND_IDX] = np.maximum(np.nanstd(residuals[:, HAND_IDX], axis=0), MIN_LOG_SD)
    positions, angles = [], []
    for g in geometries:
        frame = hand_frame(g)
        if frame is not None:
            positions.append(hand_coordinates(g, frame))
            angles.append(math.radians(frame.angle))
    pos = np.stack(positions)
    angle = math.degrees(math.atan2(np.sin(angles).mean(), np.cos(angles).mean()))
    spread = max(abs((math.degrees(a) - angle + 180.0) % 360.0 - 180.0) for a in angles)
    return AnatomyReference(area_mean=area_mean, area_sd=area_sd, position_mean=np.nanmean(pos, axis=0),
                            position_sd=np.maximum(np.nanstd(pos, axis=0), MIN_POSITION_SD), overlap_max=pair_max,
                            angle_mean=angle, angle_spread=spread, n_images=len(geometries))
