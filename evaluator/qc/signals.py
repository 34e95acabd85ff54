"""The QC signals of one prediction, per bone and per image, computed from the prediction alone.

Per bone, the features of the predicted-Dice model (:data:`FEATURES`, each 0 for a bone that looks as it should,
larger when it does not; NaN where a signal cannot be computed: no cascade, no flip TTA, no reference, or the
bone is missing):

* ``uncertain``: pixels near the threshold (:class:`evaluator.qc.probes.UncertainCounter`) per predicted pixel,
  on the bone and along its boundary (capped at 3);
* ``stage_disagreement``: 1 - Dice of stage 1 against the final mask; ``flip_disagreement``: 1 - flip-TTA Dice;
* ``pieces``: 1 - the share of the bone's raw mask (before post-processing) in its largest piece;
* ``area``: how far its area relative to the hand lies outside training's range (standard deviations beyond
  :data:`Z_FREE`);
* ``position``: how far its centroid in the hand frame lies from training's (standard deviations beyond
  :data:`Z_FREE`);
* ``overlap``: how much more it overlaps a neighbour than any training image showed (share of the smaller bone).

Per image: which bones are missing, the finger chains out of order (a bone nearer the wrist than the next one
towards the wrist), whether Radius and Ulna sit on each other's side, and the hand axis's angle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from evaluator.qc.geometry import BoneGeometry, HandFrame, bone_geometry, hand_coordinates, hand_frame, overlaps, pieces
from evaluator.qc.reference import AnatomyReference, area_residuals
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASS_TO_INDEX, CLASSES, RAYS, ray_bones

FEATURES = ("uncertain", "stage_disagreement", "flip_disagreement", "pieces", "area", "position", "overlap")
Z_FREE = 2.0  # deviations up to this many standard deviations of training cost nothing
Z_CAP = 10.0
OVERLAP_MARGIN = 0.05
RADIUS, ULNA = CLASS_TO_INDEX["Radius"], CLASS_TO_INDEX["Ulna"]


@dataclass
class ProbeResults:
    """What the inference pass measured (:mod:`evaluator.qc.probes`): ``uncertain`` (C,) pixel counts and
    ``seen_area`` (C,) predicted pixels in the frame the model saw (the counts' frame); ``stage_dice``,
    ``flip_dice`` (C,) or None."""

    uncertain: np.ndarray
    seen_area: np.ndarray
    stage_dice: np.ndarray | None = None
    flip_dice: np.ndarray | None = None


@dataclass
class ImageSignals:
    """The signals of one image (module docstring): ``features`` (C, len(FEATURES)); per class ``present``,
    ``n_pieces``, ``area_ratio`` (area over training's typical, NaN where not judged), ``overlap_with`` (the
    class it overlaps beyond training, -1 for none), ``on_border``; ``out_of_order``: (ray, tip-side bone,
    wrist-side bone) index triples; ``swapped``: Radius and Ulna on each other's side; ``angle``: the hand
    axis in degrees (None without a frame); ``angle_offset``: its difference from training's mean axis."""

    features: np.ndarray
    present: np.ndarray
    n_pieces: np.ndarray
    area_ratio: np.ndarray
    overlap_with: np.ndarray
    on_border: np.ndarray
    out_of_order: list[tuple[str, int, int]] = field(default_factory=list)
    swapped: bool = False
    angle: float | None = None
    angle_offset: float | None = None

    def feature(self, name: str) -> np.ndarray:
        return self.features[:, FEATURES.index(name)]


def _excess(z: np.ndarray) -> np.ndarray:
    return np.clip(np.abs(z) - Z_FREE, 0.0, Z_CAP)


def chain_order(geometry: BoneGeometry, frame: HandFrame) -> list[tuple[str, int, int]]:
    """(ray, tip-side bone, wrist-side bone) for consecutive present bones of a finger chain whose tip-side bone
    lies nearer the carpal centre than its wrist-side neighbour."""
    out = []
    for ray in RAYS:
        chain = [CLASS_TO_INDEX[n] for n in ray_bones(ray) if geometry.area[CLASS_TO_INDEX[n]] > 0]
        dist = {c: float(np.hypot(*(geometry.centroid[c] - frame.origin))) for c in chain}
        out += [(ray, a, b) for a, b in zip(chain[:-1], chain[1:]) if dist[a] < dist[b]]
    return out


def _overlap_excess(masks: ClassMasks, areas: np.ndarray,
                    reference: AnatomyReference | None) -> tuple[np.ndarray, np.ndarray]:
    excess, partner = np.zeros(len(masks)), np.full(len(masks), -1)
    if reference is None:
        return excess, partner
    for (i, j), ratio in overlaps(masks, areas).items():
        extra = ratio - reference.overlap_limit(i, j) - OVERLAP_MARGIN
        small = i if areas[i] <= areas[j] else j
        if extra > excess[small]:
            excess[small], partner[small] = extra, j if small == i else i
    return excess, partner


def image_signals(final: ClassMasks, raw: ClassMasks, probes: ProbeResults,
                  reference: AnatomyReference | None) -> ImageSignals:
    """The signals of one prediction: ``final`` the masks as delivered, ``raw`` before post-processing (both in
    the image's frame), ``probes`` from the inference pass, ``reference`` from training (None: the anatomy is
    judged without ranges: missing bones, chain order, swapped sides and pieces only)."""
    n = len(CLASSES)
    geometry = bone_geometry(final)
    present = geometry.present
    features = np.full((n, len(FEATURES)), np.nan)
    share, n_pieces = pieces(raw)
    features[:, FEATURES.index("uncertain")] = np.minimum(probes.uncertain / np.maximum(probes.seen_area, 1), 3.0)
    if probes.stage_dice is not None:
        features[:, FEATURES.index("stage_disagreement")] = 1.0 - probes.stage_dice
    if probes.flip_dice is not None:
        features[:, FEATURES.index("flip_disagreement")] = 1.0 - probes.flip_dice
    features[:, FEATURES.index("pieces")] = 1.0 - share
    overlap, partner = _overlap_excess(final, geometry.area, reference)
    area_ratio = np.full(n, np.nan)
    frame = hand_frame(geometry)
    signals = ImageSignals(features, present, n_pieces, area_ratio, partner, geometry.on_border)
    if frame is not None:
        signals.angle = frame.angle
        signals.out_of_order = chain_order(geometry, frame)
        across = hand_coordinates(geometry, frame)[:, 1]
        signals.swapped = bool(present[RADIUS] and present[ULNA] and across[RADIUS] < across[ULNA])
    if reference is not None:
        features[:, FEATURES.index("overlap")] = overlap
        residual = area_residuals(geometry, reference.area_mean)
        signals.area_ratio[:] = np.exp(residual)
        features[:, FEATURES.index("area")] = np.where(np.isnan(residual), 0.0, _excess(residual / reference.area_sd))
        if frame is not None:
            z = (hand_coordinates(geometry, frame) - reference.position_mean) / reference.position_sd
            features[:, FEATURES.index("position")] = _excess(np.sqrt(np.mean(z * z, axis=1)))
            signals.angle_offset = (frame.angle - reference.angle_mean + 180.0) % 360.0 - 180.0
    features[~present] = np.nan
    return signals


def finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)
