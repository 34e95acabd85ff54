"""Probabilities inside one class's candidate box, computed exactly as the full-size path computes them.

A pixel can pass ``probability > t`` only where some model input's upsampled logit exceeds ``logit(t)`` (a
sigmoid is monotone, and a blend of tiles never exceeds its largest member), and a bilinear value never exceeds
the largest of the cells it reads. So the cells of the low-resolution logits above ``logit(t)`` (minus a small
margin for float rounding) bound, through :func:`handseg.inference.bilinear.covering_range`, a box that holds every
pixel of the class's mask. Inside the box the probabilities are computed with the full path's arithmetic
(:func:`handseg.inference.bilinear.upsample_window` is bit-exact), tile by tile in the same order, so thresholding gives
the same pixels while time and memory follow the bones, not the 29 x H x W image.

A cascade's stage 2 adds its stage 1's logits (the ``prior``, upsampled to the image) to every tile's output:
a pixel can then pass only where the tile's logit exceeds ``logit(t)`` minus the prior's largest value, and the
prior exceeds ``logit(t)`` minus the largest tile logit; the candidate box is where both can hold. Where stage 2
skipped a tile (:mod:`handseg.inference.tile_selection`), that tile predicts stage 1's value (its residual is
zero): it blends in as ``sigmoid(prior)``, a pixel no run tile covers is ``sigmoid(prior)`` itself, and the box
also holds the pixels where the prior alone passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import torch

from handseg.inference.bilinear import covering_range, upsample_region
from handseg.inference.tile_selection import uncovered_rects
from handseg.model.io import logits_in_window

Box = tuple[int, int, int, int]
LOGIT_MARGIN = 1e-3  # logits this far below logit(t) still count as candidates (float rounding is ~1e-7)
PAD_LOGIT = -20.0  # a cascade prior's logit on the black padding around an image smaller than a tile


@dataclass
class ModelOutputs:
    """The model's low-resolution logits for one image and where each input lands at full size.

    ``logits`` (N, C, h, w) float32, one row per model input (resize mode: the whole image, N = 1; tile mode:
    one tile each); ``flipped``: the logits of the horizontally flipped inputs (flip TTA), flipped back at low
    resolution (``flip_back="grid"``, resize mode) or to be flipped after upsampling (``"output"``, tile mode, as
    the full path does); ``windows``: top-left corner of each input's (``window_hw``) output window in the padded
    image; ``pad``: (top, left) padding of an image smaller than a tile; ``weight``: (th, tw) blending weights
    (None in resize mode); ``accumulate``: the blending dtype; ``prior``: a cascade's stage-1 logits (C, h', w') of
    the whole image, added (upsampled to the image) to every tile's logits. ``rows``: for each window, its row of
    ``logits`` (and ``flipped``), or None where stage 2 did not run (a cascade's skipped tile, which predicts stage
    1's value); None: every window ran, row n is window n. ``uncovered``: the rectangles (y0, x0, y1, x1) of the
    padded image that no run tile covers (their output is stage 1's)."""

    logits: torch.Tensor
    flipped: torch.Tensor | None
    flip_back: Literal["grid", "output"]
    windows: list[tuple[int, int]]
    window_hw: tuple[int, int]
    image_hw: tuple[int, int]
    padded_hw: tuple[int, int]
    pad: tuple[int, int]
    weight: torch.Tensor | None
    accumulate: torch.dtype
    prior: torch.Tensor | None = None
    rows: list[int | None] | None = None
    uncovered: list[Box] = field(default_factory=list)

    def row(self, n: int) -> int | None:
        """The row of ``logits`` of window ``n``, or None where stage 2 skipped it."""
        return n if self.rows is None else self.rows[n]

    @property
    def run_windows(self) -> list[tuple[int, int]]:
        """The windows of the rows of ``logits``, in row order."""
        return self.windows if self.rows is None else [w for w, r in zip(self.windows, self.rows) if r is not None]

    def keep(self, run: Sequence[int]) -> "ModelOutputs":
        """These outputs as if stage 2 had run on the windows ``run`` (ascending indices) only: the other tiles'
        logits are dropped and they predict stage 1's value (a cascade's tile selection, applied afterwards)."""
        if self.prior is None:
            raise ValueError("only a cascade's tiles can be skipped: elsewhere there is no stage 1 to fall back on")
        ran = [self.row(n) is not None for n in range(len(self.windows))]
        kept = [n for n in run if ran[n]]
        idx = torch.as_tensor([self.row(n) for n in kept], dtype=torch.int64, device=self.logits.device)
        rows: list[int | None] = [None] * len(self.windows)
        for k, n in enumerate(kept):
            rows[n] = k
        mask = [r is not None for r in rows]
        return replace(self, logits=self.logits[idx], flipped=None if self.flipped is None else self.flipped[idx],
                       rows=None if all(mask) else rows, uncovered=uncovered_rects(self.windows, mask, self.window_hw))

    def select(self, classes: Sequence[int]) -> "ModelOutputs":
        """The same outputs for a subset of the classes (channels)."""
        idx = torch.as_tensor(list(classes), device=self.logits.device)
        return replace(self, logits=self.logits[:, idx],
                       flipped=None if self.flipped is None else self.flipped[:, idx],
                       prior=None if self.prior is None else self.prior[idx])


def prior_region(prior: torch.Tensor, image_hw: tuple[int, int], pad: tuple[int, int], window: Box,
                 pad_value: float = PAD_LOGIT, out: torch.Tensor | None = None) -> torch.Tensor:
    """A cascade prior's logits (C, h', w') upsampled to the image, over ``[py0, py1) x [px0, px1)`` of the padded
    image (``window``: (py0, px0, py1, px1); ``pad``: (top, left)): (C, py1 - py0, px1 - px0) float32,
    ``pad_value`` on the padding (default :data:`PAD_LOGIT`; 0 for probabilities); written into ``out`` when given.
    Sampled as training samples it (:func:`handseg.model.io.logits_in_window`): the same value per pixel whatever
    the window."""
    (top, left), (h, w), (py0, px0, py1, px1) = pad, image_hw, window
    y0, y1, x0, x1 = py0 - top, py1 - top, px0 - left, px1 - left
    iy0, iy1, ix0, ix1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if (iy0, iy1, ix0, ix1) == (y0, y1, x0, x1):
        return logits_in_window(prior, image_hw, (y0, x0, y1, x1), out)
    if out is None:
        out = prior.new_empty((prior.shape[0], py1 - py0, px1 - px0))
    out.fill_(pad_value)
    if iy0 < iy1 and ix0 < ix1:
        logits_in_window(prior, image_hw, (iy0, ix0, iy1, ix1), out[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0])
    return out


def float32_thresholds(thresholds: float | Sequence[float], n_classes: int) -> torch.Tensor:
    """(C,) float32 thresholds in (0, 1) (one broadcast, or one per class): what ``probs > t`` compares with."""
    if isinstance(thresholds, (int, float)):
        values = [float(thresholds)] * n_classes
    else:
        values = [float(v) for v in thresholds]
    if len(values) != n_classes:
        raise ValueError(f"got {len(values)} thresholds for {n_classes} classes")
    if not all(0.0 < v < 1.0 for v in values):
        raise ValueError(f"thresholds must be in (0, 1), got {values}")
    return torch.tensor(values, dtype=torch.float32)


def _cell_ranges(grids: torch.Tensor, taus: torch.Tensor) -> list[tuple[int, int, int, int, int, int]]:
    """(input, class, first row, last row, first col, last col) of the cells above ``taus`` (C,) per input and
    class of ``grids`` (N, C, h, w)."""
    taus = taus.to(grids.device).view(1, -1, 1)
    rows, cols = grids.amax(dim=3) > taus, grids.amax(dim=2) > taus  # (N, C, h), (N, C, w): any cell above
    present = rows.any(dim=2)
    if not bool(present.any()):
        return []
    h, w = grids.shape[-2:]
    r0 = rows.to(torch.uint8).argmax(dim=2)
    r1 = h - 1 - rows.flip(2).to(torch.uint8).argmax(dim=2)
    c0 = cols.to(torch.uint8).argmax(dim=2)
    c1 = w - 1 - cols.flip(2).to(torch.uint8).argmax(dim=2)
    idx = present.nonzero()
    table = torch.stack([idx[:, 0], idx[:, 1], r0[present], r1[present], c0[present], c1[present]], dim=1)
    return [tuple(row) for row in table.tolist()]


def _union(a: list[int] | None, b: list[int]) -> list[int]:
    return b if a is None else [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def _tile_spans(out: ModelOutputs, taus: torch.Tensor) -> list[list[int] | None]:
    """Per class, the union (padded coordinates) of every tile's output pixels that read a cell above ``taus``."""
    h, w = out.logits.shape[-2:]
    th, tw = out.window_hw
    spans: list[list[int] | None] = [None] * out.logits.shape[1]
    sources = [(out.logits, False)] + ([(out.flipped, out.flip_back == "output")] if out.flipped is not None else [])
    windows = out.run_windows
    for grids, mirrored in sources:
        for n, c, r0, r1, c0, c1 in _cell_ranges(grids, taus):
            ys, ye = covering_range(r0, r1, h, th)
            xs, xe = covering_range(c0, c1, w, tw)
            if mirrored:  # these logits are flipped after upsampling
                xs, xe = tw - xe, tw - xs
            y, x = windows[n]
            spans[c] = _union(spans[c], [y + ys, x + xs, y + ye, x + xe])
    return spans


def _prior_spans(out: ModelOutputs, taus: torch.Tensor) -> list[list[int] | None]:
    """Per class, the image pixels (in padded coordinates) that read a cell of the prior above ``taus``."""
    (h, w), (ih, iw), (top, left) = out.prior.shape[-2:], out.image_hw, out.pad
    spans: list[list[int] | None] = [None] * out.prior.shape[0]
    for _, c, r0, r1, c0, c1 in _cell_ranges(out.prior[None], taus):
        ys, ye = covering_range(r0, r1, h, ih)
        xs, xe = covering_range(c0, c1, w, iw)
        spans[c] = [ys + top, xs + left, ye + top, xe + left]
    return spans


def candidate_boxes(out: ModelOutputs, thresholds: torch.Tensor) -> list[Box | None]:
    """Per class, a box (y0, x0, y1, x1) in image coordinates that holds every pixel whose probability can pass
    its threshold, or None; ``thresholds`` (C,) float32 from :func:`float32_thresholds`."""
    taus = torch.tensor([math.log(t / (1.0 - t)) - LOGIT_MARGIN for t in thresholds.tolist()], dtype=torch.float32)
    if out.prior is None:
        spans = _tile_spans(out, taus)
    else:  # tile logit + prior > tau: each part exceeds tau minus the other's largest value
        spans = [None] * out.prior.shape[0]
        if len(out.logits):
            grids = out.logits if out.flipped is None else torch.cat([out.logits, out.flipped])
            tile_max = grids.amax(dim=(0, 2, 3)).cpu()
            prior_max = out.prior.amax(dim=(1, 2)).cpu()
            by_tiles, by_prior = _tile_spans(out, taus - prior_max), _prior_spans(out, taus - tile_max)
            spans = [None if a is None or b is None else [max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]),
                                                          min(a[3], b[3])] for a, b in zip(by_tiles, by_prior)]
        if out.rows is not None:  # a skipped tile predicts sigmoid(prior): it passes where the prior alone does
            spans = [b if a is None else a if b is None else _union(a, b)
                     for a, b in zip(spans, _prior_spans(out, taus))]
    (top, left), (ih, iw) = out.pad, out.image_hw
    boxes: list[Box | None] = []
    for span in spans:
        box = None
        if span is not None:
            y0, x0 = max(span[0] - top, 0), max(span[1] - left, 0)
            y1, x1 = min(span[2] - top, ih), min(span[3] - left, iw)
            box = (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None
        boxes.append(box)
    return boxes


def blend_box(out: ModelOutputs, c: int, box: Box) -> tuple[Box, torch.Tensor]:
    """Probabilities (y1 - y0, x1 - x0) float32 of class ``c`` inside ``box`` (image coordinates), equal to the
    same pixels of :func:`handseg.inference.pipeline.dense_probs`."""
    y0, x0, y1, x1 = box
    if out.weight is None:  # resize mode: one input covers the image
        probs = torch.sigmoid(upsample_region(out.logits[0, c:c + 1], out.window_hw, y0, y1, x0, x1)[0])
        if out.flipped is not None:
            probs.add_(torch.sigmoid(upsample_region(out.flipped[0, c:c + 1], out.window_hw, y0, y1, x0, x1)[0]))
            probs.mul_(0.5)
        return box, probs
    top, left = out.pad
    py0, px0, py1, px1 = y0 + top, x0 + left, y1 + top, x1 + left  # padded coordinates
    # A cascade's prior over the box, once: each pixel's value does not depend on the window it is computed in.
    prior = None if out.prior is None else prior_region(out.prior[c:c + 1], out.image_hw, out.pad,
                                                        (py0, px0, py1, px1))[0]
    stage1 = None if out.rows is None else torch.sigmoid(prior)  # what a skipped tile predicts
    num = torch.zeros((y1 - y0, x1 - x0), dtype=out.accumulate, device=out.logits.device)
    den = torch.zeros_like(num)
    th, tw = out.window_hw
    for n, (ty, tx) in enumerate(out.windows):
        ly0, lx0 = max(py0, ty) - ty, max(px0, tx) - tx
        ly1, lx1 = min(py1, ty + th) - ty, min(px1, tx + tw) - tx
        if ly0 >= ly1 or lx0 >= lx1:
            continue
        inside = (slice(ty + ly0 - py0, ty + ly1 - py0), slice(tx + lx0 - px0, tx + lx1 - px0))
        row = out.row(n)
        if row is None:  # stage 2 skipped: its residual is zero (and so is its mirror's: (a + a) / 2 = a)
            part = stage1[inside].clone()
        else:
            part = _tile_part(out, row, c, (ly0, ly1, lx0, lx1), None if prior is None else prior[inside])
        weight = out.weight[ly0:ly1, lx0:lx1]
        part.mul_(weight)
        num[inside] += part.to(out.accumulate)
        den[inside] += weight.to(out.accumulate)
    num /= den
    probs = num.to(torch.float32)
    for ry0, rx0, ry1, rx1 in out.uncovered:  # no run tile here: the output is stage 1's probability itself
        oy0, ox0, oy1, ox1 = max(ry0, py0) - py0, max(rx0, px0) - px0, min(ry1, py1) - py0, min(rx1, px1) - px0
        if oy0 < oy1 and ox0 < ox1:
            probs[oy0:oy1, ox0:ox1] = stage1[oy0:oy1, ox0:ox1]
    return box, probs


def _tile_part(out: ModelOutputs, row: int, c: int, region: tuple[int, int, int, int],
               prior: torch.Tensor | None) -> torch.Tensor:
    """Probabilities of class ``c`` that the tile of ``row`` predicts over ``region`` (ly0, ly1, lx0, lx1) of its
    window: its logits upsampled, plus the cascade's ``prior`` over the same pixels, through the sigmoid (the mean
    with the mirrored input's under flip TTA)."""
    ly0, ly1, lx0, lx1 = region
    tw = out.window_hw[1]
    part = upsample_region(out.logits[row, c:c + 1], out.window_hw, ly0, ly1, lx0, lx1)[0]
    if prior is not None:
        part = part + prior
    part = torch.sigmoid(part)
    if out.flipped is not None:
        mirror = upsample_region(out.flipped[row, c:c + 1], out.window_hw, ly0, ly1, tw - lx1, tw - lx0)[0].flip(-1)
        part.add_(torch.sigmoid(mirror if prior is None else mirror + prior)).mul_(0.5)
    return part
