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

import numpy as np
import torch
import torch.nn.functional as F

from evaluator.overlays import box_coverage
from handseg.format.class_masks import ClassMasks
from handseg.format.metrics import DICE_EPS
from handseg.inference.box_blend import PAD_LOGIT, ModelOutputs

UNCERTAIN_LOGIT = 1.5  # |logit(p) - logit(t)| below this is uncertain: p in (0.18, 0.82) for t = 0.5
GRID = 4  # stage 1 and the final masks are compared on a grid of 1/4 of the image's side
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
        sample = probs[::STRIDE, ::STRIDE].contiguous()
        near = torch.count_nonzero((sample > float(self.low[c])) & (sample < float(self.high[c])))
        self.counts[c] += STRIDE * STRIDE * int(near)


def mask_areas(masks: ClassMasks) -> np.ndarray:
    """(C,) int64 pixels per class (``count_nonzero``: several times faster than summing booleans)."""
    return np.array([0 if m is None else int(torch.count_nonzero(m)) for m in masks.masks], dtype=np.int64)


def _dice(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...]) -> np.ndarray:
    inter = (a & b).sum(dims).double()
    return ((2 * inter + DICE_EPS) / (a.sum(dims).double() + b.sum(dims).double() + DICE_EPS)).cpu().numpy()


def stage_agreement(out: ModelOutputs, masks: ClassMasks, thresholds: Sequence[float]) -> np.ndarray | None:
    """(C,) Dice of stage 1's masks against ``masks`` (the final masks, in the frame the model saw: before any
    hand normalisation is undone) on the coarse grid; None without a cascade. A class that both leave empty
    agrees (1)."""
    if out.prior is None:
        return None
    h, w = out.image_hw
    grid = (max(1, math.ceil(h / GRID)), max(1, math.ceil(w / GRID)))
    taus = torch.as_tensor(_logits(thresholds), dtype=out.prior.dtype, device=out.prior.device).view(-1, 1, 1)
    with torch.inference_mode():
        first = F.interpolate(out.prior[None], size=grid, mode="bilinear", align_corners=False)[0] > taus
    final = torch.from_numpy(box_coverage(masks, grid) >= 0.5).to(first.device)
    return _dice(first, final, (1, 2))


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
        return _dice(plain > taus, mirrored > taus, (0, 2, 3))
