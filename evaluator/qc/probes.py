"""Confidence and disagreement signals from what the inference already computed (no extra model pass).

* :class:`UncertainCounter`: a :data:`handseg.inference.pipeline.Probe` that counts, in each class's candidate
  box, the pixels whose probability lies near the class's threshold (within :data:`UNCERTAIN_LOGIT` of it in
  logit space): a sharp, confident bone has a thin ring of them along its boundary, an unsure one a wide ring
  or a whole uncertain body.
* :func:`stage_agreement`: a cascade's stage 1 (its low-resolution logits of the whole image, thresholded)
  against the final masks, per class Dice on a grid of 1/:data:`GRID` of the image's side.
* :func:`flip_agreement`: with flip TTA, the model on the image against the model on the mirrored image, per
  class Dice of their thresholded low-resolution logits (with a cascade's stage 1 added, as the blend adds it).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from evaluator.overlays import box_coverage
from evaluator.qc.geometry import count_true
from handseg.format.class_masks import ClassMasks
from handseg.format.metrics import DICE_EPS
from handseg.inference.box_blend import PAD_LOGIT, ModelOutputs

UNCERTAIN_LOGIT = 1.5  # |logit(p) - logit(t)| below this is uncertain: p in (0.18, 0.82) for t = 0.5
GRID = 8  # stage 1 and the final masks are compared on a grid of 1/8 of the image's side (stage 1's cells are
# 1/21 of a 2048 px image's side at 384 px input: finer would only interpolate)
STRIDE = 2  # the uncertain pixels are counted on every second row and column


def _logits(thresholds: Sequence[float]) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    return np.log(t / (1.0 - t))


class UncertainCounter:
    """Per class, the pixels whose probability is within :data:`UNCERTAIN_LOGIT` of its threshold (``counts``,
    (C,) int64), summed over the boxes it is called with: ``probe(class, box, probabilities)``. Every
    :data:`STRIDE`-th row and column is looked at and counts for ``STRIDE**2`` pixels (the uncertain ring is
    several pixels wide: an unbiased estimate at a quarter of the cost)."""

    def __init__(self, thresholds: Sequence[float], band: float = UNCERTAIN_LOGIT) -> None:
        logit = _logits(thresholds)
        self.low = (1.0 / (1.0 + np.exp(-(logit - band)))).astype(np.float32)
        self.high = (1.0 / (1.0 + np.exp(-(logit + band)))).astype(np.float32)
        self.counts = np.zeros(len(logit), dtype=np.int64)

    def __call__(self, c: int, box: tuple[int, int, int, int], probs: torch.Tensor) -> None:
        sample = probs[::STRIDE, ::STRIDE]
        self.counts[c] += STRIDE * STRIDE * count_true((sample > float(self.low[c])) & (sample < float(self.high[c])))


def mask_areas(masks: ClassMasks) -> np.ndarray:
    """(C,) int64 pixels per class."""
    return np.array([0 if m is None else count_true(m) for m in masks.masks], dtype=np.int64)


def _dice(a: torch.Tensor, b: torch.Tensor, channel: int) -> np.ndarray:
    """Per class Dice of two bool tensors whose dimension ``channel`` is the class."""
    a, b = a.movedim(channel, 0).contiguous(), b.movedim(channel, 0).contiguous()
    inter, na, nb = (count_true(x, rows=x.shape[0]).astype(np.float64) for x in (a & b, a, b))
    return (2 * inter + DICE_EPS) / (na + nb + DICE_EPS)


def stage_agreement(out: ModelOutputs, masks: ClassMasks, thresholds: Sequence[float]) -> np.ndarray | None:
    """(C,) Dice of stage 1's masks against ``masks`` (the final masks, in the frame the model saw: before any
    hand normalisation is undone) on the coarse grid; None without a cascade. A class that both leave empty
    agrees (1). Stage 1's logits are resized class by class with OpenCV (bilinear, pixel centres as
    ``F.interpolate(..., align_corners=False)``): a few milliseconds, where torch's threads wait on a busy CPU."""
    if out.prior is None:
        return None
    h, w = out.image_hw
    grid = (max(1, math.ceil(h / GRID)), max(1, math.ceil(w / GRID)))
    prior = out.prior.float().cpu().numpy()
    taus = _logits(thresholds)
    first = np.stack([cv2.resize(p, grid[::-1], interpolation=cv2.INTER_LINEAR) > t for p, t in zip(prior, taus)])
    final = box_coverage(masks, grid) >= 0.5
    return _dice(torch.from_numpy(first), torch.from_numpy(final), 0)


def _prior_on_tiles(out: ModelOutputs) -> torch.Tensor:
    """The cascade prior's logits at every tile's low-resolution cells: (N, C, gh, gw)."""
    (th, tw), (gh, gw) = out.window_hw, out.logits.shape[-2:]
    sy, sx = th / gh, tw / gw
    (h, w), (ph, pw), (top, left) = out.image_hw, out.padded_hw, out.pad
    image = F.interpolate(out.prior[None], size=(max(1, round(h / sy)), max(1, round(w / sx))), mode="bilinear",
                          align_corners=False)[0]
    canvas = image.new_full((image.shape[0], max(round(ph / sy), gh), max(round(pw / sx), gw)), PAD_LOGIT)
    y0, x0 = round(top / sy), round(left / sx)
    canvas[:, y0:y0 + image.shape[1], x0:x0 + image.shape[2]] = image[:, :canvas.shape[1] - y0, :canvas.shape[2] - x0]
    tiles = []
    for y, x in out.windows:
        r, c = min(round(y / sy), canvas.shape[1] - gh), min(round(x / sx), canvas.shape[2] - gw)
        tiles.append(canvas[:, r:r + gh, c:c + gw])
    return torch.stack(tiles)


def flip_agreement(out: ModelOutputs, thresholds: Sequence[float]) -> np.ndarray | None:
    """(C,) Dice between the thresholded low-resolution logits of the plain and the mirrored inputs (mirrored
    back), over every input; None without flip TTA."""
    if out.flipped is None:
        return None
    with torch.inference_mode():
        plain = out.logits
        mirrored = out.flipped if out.flip_back == "grid" else out.flipped.flip(-1)
        if out.prior is not None:
            prior = _prior_on_tiles(out)
            plain, mirrored = plain + prior, mirrored + prior
        taus = torch.as_tensor(_logits(thresholds), dtype=plain.dtype, device=plain.device).view(1, -1, 1, 1)
        return _dice(plain > taus, mirrored > taus, 1)
