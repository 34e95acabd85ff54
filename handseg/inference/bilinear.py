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

:func:`covering_range` goes the other way: the output pixels whose interpolation reads a given run of source
cells, so a box of candidate cells on the low-resolution grid becomes a box of output pixels.
"""

from __future__ import annotations

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


def upsample_region(grid: torch.Tensor, out_hw: tuple[int, int], y0: int, y1: int, x0: int,
                    x1: int) -> torch.Tensor:
    """Like :func:`upsample_window`, but a window of more than a quarter of the output is cut from PyTorch's own
    full-size resize (fast native code, the same values), so a model that predicts everywhere costs no more
    than the full-size path."""
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
