"""Polygons to multi-label masks, at any size, by scaling the polygons (never by resizing a mask).

Convention: an integer vertex (x, y) is the centre of pixel column x, row y; in continuous coordinates
that centre is (x + 0.5, y + 0.5). Scaling by ``s`` maps a pixel-centre coordinate ``x`` to
``(x + 0.5) * s - 0.5`` in the target grid. Scaled vertices keep :data:`SHIFT` fractional bits through
``cv2.fillPoly(..., shift=SHIFT)``; a downscaled polygon is filled on a sub-grid of about native density
and reduced by coverage, so it matches the area-downsampled native mask (>= half covered) up to a few
boundary pixels while only ever touching the polygon's bounding box. Each class gets its own channel:
overlapping bones stay overlapping (multi-label).

Bit packing: :func:`pack_bits` / :func:`unpack_bits` turn (C, H, W) masks into one (H, W) uint32 with bit c =
class c and back (numpy, for the cache). :func:`unpack_label_batch` is the torch unpack of a batch of packed
labels, run where the batch already is (the training device), so loaders move 4 bytes per pixel instead of 29.
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
import torch

SHIFT = 8  # fractional bits of the fixed-point vertices given to cv2.fillPoly (1/256 pixel)
_ONE = 1 << SHIFT
MAX_SUPERSAMPLE = 8  # finest sub-grid per target pixel and axis when downscaling


def _supersample(scale: float) -> int:
    """Sub-samples per target pixel along one axis: enough to reach (about) native resolution, at most 8."""
    if scale >= 1.0:
        return 1
    return int(min(MAX_SUPERSAMPLE, math.ceil(1.0 / scale - 1e-9)))


def _fill(out: np.ndarray, polygon: np.ndarray, scale_xy: tuple[float, float], offset_xy: tuple[float, float]) -> None:
    """OR one polygon into ``out`` (h, w) uint8 as 1s; vertex v -> (v + 0.5 - offset) * scale - 0.5.

    The polygon is filled into a buffer covering its own bounding box and then pasted, so cv2 never clips
    it against ``out``'s border: the pixels set depend only on the polygon, never on the window, which
    makes a crop agree exactly with the same region of the full mask. When downscaling, the polygon is
    filled on a grid ``k`` times finer (about native) and each k x k block is set where at least half of
    it is covered: the area-downsampled native mask, without the half-pixel outward bias that
    ``cv2.fillPoly`` (which includes boundary pixels) would add at the coarse scale.
    """
    pts = np.asarray(polygon, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < 3:
        return
    (sx, sy), (ox, oy) = scale_xy, offset_xy
    kx, ky = _supersample(sx), _supersample(sy)
    x = (pts[:, 0] + 0.5 - ox) * (sx * kx) - 0.5
    y = (pts[:, 1] + 0.5 - oy) * (sy * ky) - 0.5
    fixed = np.rint(np.stack([x, y], axis=1) * _ONE).astype(np.int64)
    k = np.array([kx, ky])
    # Bounding box in target pixels (floor of the fine grid's box divided by k), inclusive.
    lo = (fixed.min(axis=0) >> SHIFT) // k
    hi = (-((-fixed.max(axis=0)) >> SHIFT)) // k
    h, w = out.shape
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]) + 1, w), min(int(hi[1]) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    bh, bw = int(hi[1] - lo[1]) + 1, int(hi[0] - lo[0]) + 1
    fine = np.zeros((bh * ky, bw * kx), dtype=np.uint8)
    local = (fixed - ((lo * k) << SHIFT)).astype(np.int32)
    cv2.fillPoly(fine, [local.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=SHIFT)
    if kx * ky > 1:
        covered = fine.reshape(bh, ky, bw, kx).sum(axis=(1, 3), dtype=np.int32)
        buf = (2 * covered >= kx * ky).astype(np.uint8)
    else:
        buf = fine
    bx, by = x0 - int(lo[0]), y0 - int(lo[1])
    region = out[y0:y1, x0:x1]
    np.bitwise_or(region, buf[by : by + (y1 - y0), bx : bx + (x1 - x0)], out=region)


def rasterize(
    polygons: Sequence[np.ndarray],
    src_hw: tuple[int, int],
    out_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Rasterise C polygons drawn on a ``src_hw`` image into a (C, out_h, out_w) uint8 {0, 1} mask.

    Args:
        polygons: C arrays of (N, 2) (x, y) vertices in source pixel coordinates, one per class
            (CLASSES order for the 29 bones); an array with < 3 vertices gives an empty channel.
        src_hw: (height, width) of the image the polygons were drawn on.
        out_hw: target (height, width); default ``src_hw`` (native).
    Returns:
        (C, out_h, out_w) uint8 with 1 inside each polygon.
    """
    src_h, src_w = int(src_hw[0]), int(src_hw[1])
    out_h, out_w = (src_h, src_w) if out_hw is None else (int(out_hw[0]), int(out_hw[1]))
    masks = np.zeros((len(polygons), out_h, out_w), dtype=np.uint8)
    scale = (out_w / src_w, out_h / src_h)
    for c, poly in enumerate(polygons):
        _fill(masks[c], poly, scale, (0.0, 0.0))
    return masks


def rasterize_window(
    polygons: Sequence[np.ndarray],
    window: tuple[int, int, int, int],
    out_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Rasterise the native-resolution crop ``window = (y0, x0, h, w)`` of C polygons.

    The result equals ``rasterize(polygons, src_hw)[:, y0:y0+h, x0:x0+w]`` exactly, without building the
    full mask; a window reaching past the image border is zero there. With ``out_hw`` the crop is
    rasterised directly at that size (polygons scaled, sub-pixel).

    Returns:
        (C, h, w) uint8 {0, 1}, or (C, out_h, out_w) when ``out_hw`` is given.
    """
    y0, x0, h, w = (int(v) for v in window)
    out_h, out_w = (h, w) if out_hw is None else (int(out_hw[0]), int(out_hw[1]))
    masks = np.zeros((len(polygons), out_h, out_w), dtype=np.uint8)
    scale = (out_w / w, out_h / h)
    for c, poly in enumerate(polygons):
        _fill(masks[c], poly, scale, (float(x0), float(y0)))
    return masks


def pack_bits(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) {0, 1} (uint8 or bool), C <= 32 -> (H, W) uint32 with bit c set where class c is present."""
    if masks.ndim != 3 or masks.shape[0] > 32:
        raise ValueError(f"expected (C <= 32, H, W) masks, got shape {masks.shape}")
    packed = np.zeros(masks.shape[1:], dtype=np.uint32)
    tmp = np.empty(masks.shape[1:], dtype=np.uint32)
    for c in range(masks.shape[0]):
        np.not_equal(masks[c], 0, out=tmp, casting="unsafe")
        np.left_shift(tmp, np.uint32(c), out=tmp)
        np.bitwise_or(packed, tmp, out=packed)
    return packed


def unpack_bits(packed: np.ndarray, num_classes: int) -> np.ndarray:
    """(H, W) uint32 from :func:`pack_bits` (or any (..., H, W) crop of it) -> (num_classes, ..., H, W) uint8."""
    if packed.dtype != np.uint32:
        raise ValueError(f"expected uint32 packed masks, got {packed.dtype}")
    out = np.empty((num_classes,) + packed.shape, dtype=np.uint8)
    tmp = np.empty(packed.shape, dtype=np.uint32)
    for c in range(num_classes):
        np.right_shift(packed, np.uint32(c), out=tmp)
        np.bitwise_and(tmp, np.uint32(1), out=tmp)
        out[c] = tmp
    return out


def unpack_label_batch(labels: torch.Tensor, num_classes: int = 29, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Torch unpack of bit-packed labels, on their own device: (B, h, w) int32 -> (B, num_classes, h, w) {0, 1}.

    ``labels`` holds the uint32 of :func:`pack_bits` reinterpreted as int32 (torch has no uint32 arithmetic;
    with up to 31 classes bit 31 is never set, and the arithmetic shift reads bit 31 correctly anyway). Any
    (..., h, w) shape works: the class axis is inserted before the last two. Returns ``dtype`` (float32 for
    losses, uint8/bool for counting), equal to ``unpack_bits`` of the same array with the class axis moved.
    """
    if labels.dtype != torch.int32:
        raise ValueError(f"expected int32 packed labels, got {labels.dtype}")
    if labels.ndim < 2 or not 0 < num_classes <= 32:
        raise ValueError(f"expected (..., h, w) labels and 1..32 classes, got {tuple(labels.shape)}, {num_classes}")
    bits = torch.arange(num_classes, device=labels.device, dtype=torch.int32).view(num_classes, 1, 1)
    return (labels.unsqueeze(-3) >> bits).bitwise_and_(1).to(dtype)
