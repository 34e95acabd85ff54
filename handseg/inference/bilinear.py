"""Bilinear upsampling of one window of the output, equal bit for bit to ``F.interpolate`` of the whole map.

Inference only needs the full-size logits where a bone can be: inside a class's candidate box. These pure
functions compute any window ``[y0, y1) x [x0, x1)`` of ``F.interpolate(grid, size=out_hw, mode="bilinear",
align_corners=False)`` without making the rest, with PyTorch's own arithmetic, so thresholds give the masks the
full-size path gives:

* source coordinates ``s = scale * (d + 0.5) - 0.5`` in float32 (``scale = in / out``), clamped at 0; the index
  is ``floor(s)`` capped at ``in - 1``, its neighbour the next index where there is one; ``w1 = s - i0`` and
  ``w0 = 1 - w1``; a side that keeps its size is copied;
* columns first, then rows, each as ``a * w0 + b * w1`` with one rounding for the sum and the first product
  (PyTorch's CPU kernel is compiled with fused multiply-add): ``fma(a, w0, b * w1)``, emulated in float64
  (exact for the product of two float32 numbers) and rounded once to float32.

When the output is the grid enlarged by a power of two (a SegFormer tile's logits: 128 -> 512),
:func:`upsample_region` lets PyTorch itself resize the few cells a window reads: the crop's scale and source
coordinates are then exactly the whole map's shifted by whole cells, so the values are the same, at native speed.

:func:`covering_range` goes the other way: the output pixels whose interpolation reads a given run of source
cells, so a box of candidate cells on the low-resolution grid becomes a box of output pixels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F


class AxisWeights(NamedTuple):
    """Per output position along one axis: the two source indices (int64) and their float32 weights."""

    i0: torch.Tensor
    i1: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor


def axis_weights(in_size: int, out_size: int, start: int, stop: int,
                 device: str | torch.device = "cpu") -> AxisWeights:
    """Source indices and weights of output positions ``[start, stop)`` when ``in_size`` samples are resized to
    ``out_size`` (PyTorch's ``align_corners=False`` rule, float32)."""
    pos = torch.arange(start, stop, device=device)
    if in_size == out_size:
        ones = torch.ones(stop - start, dtype=torch.float32, device=device)
        return AxisWeights(pos, pos, ones, torch.zeros_like(ones))
    scale = torch.tensor(float(in_size), dtype=torch.float32) / torch.tensor(float(out_size), dtype=torch.float32)
    # fma(scale, d + 0.5, -0.5): the product is exact in float64, then one rounding to float32.
    src = (scale.double().to(device) * (pos.to(torch.float32) + 0.5).double() - 0.5).float().clamp_(min=0.0)
    i0 = src.to(torch.int64).clamp_(max=in_size - 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = (src - i0.to(torch.float32)).clamp_(0.0, 1.0)
    return AxisWeights(i0, i1, 1.0 - w1, w1)


def _fma_lerp(a: torch.Tensor, b: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor) -> torch.Tensor:
    """float32 ``fma(a, w0, b * w1)``: ``b * w1`` rounded to float32, then ``a * w0`` added with one rounding."""
    bw = (b * w1).double()
    return (a.double() * w0.double() + bw).float()


def upsample_window(grid: torch.Tensor, out_hw: tuple[int, int], y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    """Window ``[y0, y1) x [x0, x1)`` of the bilinear resize of ``grid`` (C, h, w) float32 to ``out_hw``:
    (C, y1 - y0, x1 - x0) float32, equal to the same slice of ``F.interpolate`` on the whole grid."""
    c, h, w = grid.shape
    ay = axis_weights(h, out_hw[0], y0, y1, grid.device)
    ax = axis_weights(w, out_hw[1], x0, x1, grid.device)
    rows = torch.unique(torch.cat([ay.i0, ay.i1]))  # the few source rows the window reads
    lookup = torch.empty(h, dtype=torch.int64, device=grid.device)
    lookup[rows] = torch.arange(rows.numel(), device=grid.device)
    src = grid[:, rows]  # (C, R, w)
    across = _fma_lerp(src[:, :, ax.i0], src[:, :, ax.i1], ax.w0, ax.w1)  # (C, R, x1 - x0): columns first
    top, bottom = across[:, lookup[ay.i0]], across[:, lookup[ay.i1]]  # (C, y1 - y0, x1 - x0)
    return _fma_lerp(top, bottom, ay.w0[:, None], ay.w1[:, None])


SMALL_OUTPUT = 128  # PyTorch's CPU bilinear resize takes a separable kernel when output height + width <= this


def _power_of_two_factor(in_size: int, out_size: int) -> int | None:
    """``out_size / in_size`` when it is a power of two (1, 2, 4, ...), else None."""
    factor, rest = divmod(out_size, in_size)
    return factor if rest == 0 and factor & (factor - 1) == 0 else None


def _cells(start: int, stop: int, factor: int, in_size: int) -> tuple[int, int]:
    """The source cells ``[first, last)`` that output positions ``[start, stop)`` read at an integer ``factor``,
    with one more cell each side, so that no position of the window meets the crop's border clamping."""
    first = max(math.floor((start + 0.5) / factor - 0.5) - 1, 0)
    last = min(math.floor((stop - 0.5) / factor - 0.5) + 3, in_size)
    return first, last


def upsample_region(grid: torch.Tensor, out_hw: tuple[int, int], y0: int, y1: int, x0: int,
                    x1: int) -> torch.Tensor:
    """Like :func:`upsample_window`, computed the fastest way that gives the same values: when the output is the
    grid enlarged by a power of two on both axes (a SegFormer tile: 128 -> 512), PyTorch's own resize of the
    cells the window reads (the crop's scale and source coordinates are then exactly the whole map's, shifted by
    whole cells); otherwise a window of more than a quarter of the output is cut from PyTorch's full-size resize,
    a smaller one emulated (:func:`upsample_window`)."""
    (h, w), (oh, ow) = grid.shape[-2:], out_hw
    fy, fx = _power_of_two_factor(h, oh), _power_of_two_factor(w, ow)
    if fy is not None and fx is not None:
        cy0, cy1 = _cells(y0, y1, fy, h)
        cx0, cx1 = _cells(x0, x1, fx, w)
        # PyTorch resizes an output whose height + width is at most 128 with another (separable) kernel, whose
        # rounding differs: such a crop is widened (then heightened) until the general kernel takes it.
        short = -(-max(SMALL_OUTPUT + 1 - (cy1 - cy0) * fy - (cx1 - cx0) * fx, 0) // fx)
        cx1 = min(cx1 + short, w)
        cx0 = max(cx0 - short, 0) if (cy1 - cy0) * fy + (cx1 - cx0) * fx <= SMALL_OUTPUT else cx0
        if (cy1 - cy0) * fy + (cx1 - cx0) * fx <= SMALL_OUTPUT:
            cy0, cy1 = 0, h  # the whole grid's rows: at worst the full resize itself
        crop = grid[None, :, cy0:cy1, cx0:cx1].float()
        up = F.interpolate(crop, size=((cy1 - cy0) * fy, (cx1 - cx0) * fx), mode="bilinear", align_corners=False)
        return up[0, :, y0 - cy0 * fy:y1 - cy0 * fy, x0 - cx0 * fx:x1 - cx0 * fx]
    if 4 * (y1 - y0) * (x1 - x0) <= out_hw[0] * out_hw[1]:
        return upsample_window(grid, out_hw, y0, y1, x0, x1)
    full = F.interpolate(grid[None].float(), size=tuple(out_hw), mode="bilinear", align_corners=False)[0]
    return full[:, y0:y1, x0:x1]


def covering_range(first: int, last: int, in_size: int, out_size: int) -> tuple[int, int]:
    """Output positions ``[start, stop)`` that cover every position whose interpolation reads a source cell in
    ``[first, last]`` (a superset by one position each side, so float rounding cannot leave a pixel out)."""
    if in_size == out_size:
        return max(first - 1, 0), min(last + 2, out_size)
    scale = out_size / in_size
    # Position d reads cells floor(s) and floor(s) + 1 with s = (d + 0.5) / scale - 0.5: cell j is read for
    # s in (j - 1, j + 1), i.e. d in ((j - 0.5) * scale - 0.5, (j + 1.5) * scale - 0.5).
    start = int((first - 0.5) * scale - 0.5) - 1
    stop = int((last + 1.5) * scale - 0.5) + 2
    if first == 0:
        start = 0  # positions left of the first cell's centre are clamped to it
    if last == in_size - 1:
        stop = out_size
    return max(start, 0), min(stop, out_size)
