"""Post-processing of predicted masks, chosen per class on validation (as nnU-Net does): keep the largest
connected component, and/or fill holes, only for the classes where it raised validation Dice.

Every bone is one piece without holes, so a stray island (a fragment of the neighbouring finger's bone) or a
pinhole is an error; but removing islands can also delete the right piece when the model splits a bone, so
the choice is measured, not assumed (:func:`choose`). The result is stored with the tuned thresholds and
applied by the one inference path (validation, submission, robustness, prediction) as the ``postprocess`` of
:func:`handseg.inference.pipeline.predict_masks`. Masks are processed in their boxes, on the CPU (OpenCV).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.metrics import DICE_EPS

OPTIONS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> the largest 8-connected component of ``mask`` (the first on a tie)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> ``mask`` with every background region that does not reach the border filled."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)  # the outside, reached from the padded corner
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def apply_one(mask: np.ndarray, keep_largest: bool, fill: bool) -> np.ndarray:
    """One class's mask (h, w) bool after the chosen steps (largest component first, then holes)."""
    if keep_largest:
        mask = largest_component(mask)
    if fill:
        mask = fill_holes(mask)
    return mask


@dataclass(frozen=True)
class PostProcessing:
    """Per class (CLASSES order): ``largest_component[c]`` and ``fill_holes[c]``. Callable on ClassMasks."""

    largest_component: tuple[bool, ...] = (False,) * len(CLASSES)
    fill_holes: tuple[bool, ...] = (False,) * len(CLASSES)

    def __post_init__(self) -> None:
        if len(self.largest_component) != len(CLASSES) or len(self.fill_holes) != len(CLASSES):
            raise ValueError(f"post-processing needs {len(CLASSES)} choices per step")

    @property
    def active(self) -> bool:
        return any(self.largest_component) or any(self.fill_holes)

    def __call__(self, masks: ClassMasks) -> ClassMasks:
        if not self.active:
            return masks

        def one(c: int, mask: torch.Tensor) -> torch.Tensor:
            if not (self.largest_component[c] or self.fill_holes[c]):
                return mask
            done = apply_one(mask.cpu().numpy(), self.largest_component[c], self.fill_holes[c])
            return torch.from_numpy(done).to(mask.device)

        return masks.map(one)

    def to_dict(self) -> dict[str, dict[str, bool]]:
        """{class: {"largest_component": bool, "fill_holes": bool}} (the thresholds file's ``postprocess``)."""
        return {c: {"largest_component": lc, "fill_holes": fh}
                for c, lc, fh in zip(CLASSES, self.largest_component, self.fill_holes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PostProcessing":
        """Inverse of :meth:`to_dict`; a missing class gets no post-processing; ValueError for an unknown class
        or a non-boolean choice."""
        unknown = sorted(set(data) - set(CLASSES))
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}")
        flags = []
        for c in CLASSES:
            entry = data.get(c) or {}
            if not isinstance(entry, dict) or set(entry) - {"largest_component", "fill_holes"}:
                raise ValueError(f"{c}: expected {{largest_component: bool, fill_holes: bool}}, got {entry!r}")
            values = (entry.get("largest_component", False), entry.get("fill_holes", False))
            if not all(isinstance(v, bool) for v in values):
                raise ValueError(f"{c}: choices must be true or false, got {entry!r}")
            flags.append(values)
        return cls(tuple(f[0] for f in flags), tuple(f[1] for f in flags))


def option_counts(pred: ClassMasks, truth: ClassMasks) -> np.ndarray:
    """(4, C, 3) Dice counts of one image under each of :data:`OPTIONS` (none, largest, fill, both)."""
    out = np.zeros((len(OPTIONS), len(pred), 3), dtype=np.int64)
    for k, (keep, fill) in enumerate(OPTIONS):
        choice = PostProcessing((keep,) * len(pred), (fill,) * len(pred))
        out[k] = choice(pred).counts(truth)
    return out


def choose(option_counts_per_image: np.ndarray, min_gain: float = 1e-4) -> tuple[PostProcessing, np.ndarray]:
    """The per-class option with the best mean validation Dice from (N, 4, C, 3) counts; an option other than
    none must beat none by ``min_gain``. Returns the choice and the (4, C) mean Dice of every option."""
    counts = option_counts_per_image.astype(np.float64)
    dice = ((2 * counts[..., 0] + DICE_EPS) / (counts[..., 1] + counts[..., 2] + DICE_EPS)).mean(axis=0)  # (4, C)
    best = np.argmax(dice, axis=0)
    best = np.where(dice[best, np.arange(dice.shape[1])] > dice[0] + min_gain, best, 0)
    picked = [OPTIONS[k] for k in best]
    return PostProcessing(tuple(p[0] for p in picked), tuple(p[1] for p in picked)), dice
