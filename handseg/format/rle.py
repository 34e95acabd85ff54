"""Run-length encoding exactly as the competition: row-major, 1-based starts, ``start length`` pairs.

A (H, W) mask is flattened row by row; each run of ones is written as its 1-based start and its length,
all numbers space-separated; an empty mask is the empty string. Example: the 2x3 mask
``[[0, 1, 1], [1, 0, 1]]`` flattens to ``0 1 1 1 0 1`` and encodes to ``"2 3 6 1"``.

Masks are encoded from boxes: a class's pixels inside ``[y0, y0 + h) x [x0, x0 + w)`` of the image, zero
elsewhere. :func:`rle_encode_many` crops full-size masks to their bounding boxes first; an inference path
that only ever holds the boxes calls :func:`rle_encode_boxes` (numpy arrays or torch tensors on any device).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np

Box = tuple[int, int, Any] | None  # None (empty mask) or (y0, x0, (h, w) mask), the mask numpy or torch


def _as_numpy(x: Any) -> np.ndarray:
    """numpy array or torch tensor -> numpy array on the CPU."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _format(starts: np.ndarray, lengths: np.ndarray) -> str:
    """(n,) int64 starts and lengths -> ``"start length start length ..."``; no runs give ``""``."""
    pairs = np.stack((starts, lengths), 1).ravel().tolist()
    return " ".join(["%d"] * len(pairs)) % tuple(pairs)


def rle_encode(mask: Any) -> str:
    """Encode one (H, W) mask (bool/uint8/any numeric, numpy or torch; nonzero = 1) as the competition RLE."""
    mask = _as_numpy(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    return rle_encode_many(mask[None])[0]


def _occupied_rows(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) numpy masks -> (C, H) bool, True where a row holds a nonzero pixel; one pass over the stack,
    on 8-pixel words where pixels are single bytes."""
    if masks.dtype.kind in "biu" and masks.dtype.itemsize == 1 and masks.flags.c_contiguous and masks.shape[2] % 8 == 0:
        return np.bitwise_or.reduce(masks.view(np.uint64), axis=2) != 0
    return masks.any(axis=2)


def _bounding_boxes(masks: np.ndarray) -> list[Box]:
    """(C, H, W) numpy masks (nonzero = 1) -> per channel None (empty) or ``(y0, x0, crop)``, ``crop`` the (h, w)
    view of the mask inside the channel's tight bounding box."""
    items: list[Box] = []
    for mask, rows in zip(masks, _occupied_rows(masks)):
        rows = np.flatnonzero(rows)
        if rows.size == 0:
            items.append(None)
            continue
        y0, y1 = rows[0], rows[-1] + 1
        cols = np.flatnonzero(mask[y0:y1].any(axis=0))
        x0, x1 = cols[0], cols[-1] + 1
        items.append((int(y0), int(x0), mask[y0:y1, x0:x1]))
    return items


def rle_encode_many(masks: Any) -> list[str]:
    """Encode C masks (C, H, W) at once (numpy or torch, nonzero = 1); returns C strings, one per channel.

    One pass over the stack finds each channel's occupied rows; only the bounding boxes are scanned for runs.
    """
    masks = _as_numpy(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected (C, H, W) masks, got shape {masks.shape}")
    return rle_encode_boxes(_bounding_boxes(masks), masks.shape[1], masks.shape[2])


def _check_boxes(items: Sequence[Box], height: int, width: int) -> list[tuple[int, int, int, Any]]:
    """Validate items against the (height, width) image; the non-empty ones as (item index, y0, x0, mask)."""
    boxes = []
    for i, item in enumerate(items):
        if item is None:
            continue
        y0, x0, mask = item
        mask = mask if hasattr(mask, "detach") else np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"item {i}: expected a (h, w) mask, got shape {tuple(mask.shape)}")
        h, w = mask.shape
        if y0 < 0 or x0 < 0 or y0 + h > height or x0 + w > width:
            raise ValueError(f"item {i}: box at ({y0}, {x0}) of size {h}x{w} is not inside the {height}x{width} image")
        if h and w:
            boxes.append((i, int(y0), int(x0), mask))
    return boxes


def _layout(boxes: list[tuple[int, int, int, Any]], width: int) -> tuple[np.ndarray, int]:
    """Where each box lies in one flat buffer holding all of them: (5, K) int64 rows item, y0, x0, stride,
    offset, and the buffer's length.

    The buffer starts with a 0 and holds each box's rows at ``stride`` apart, then a 0. A box narrower than the
    image gets a 0 after every row (stride w + 1), so no run crosses rows; a full-width box is stored as it
    lies in the image (stride w), so runs continue from one row into the next, exactly as in the image.
    """
    meta = np.zeros((5, len(boxes)), dtype=np.int64)
    offset = 1
    for k, (i, y0, x0, mask) in enumerate(boxes):
        h, w = mask.shape
        stride = w if w == width else w + 1
        meta[:, k] = i, y0, x0, stride, offset
        offset += h * stride + 1
    return meta, offset


def _to_image(bounds: Any, meta: Any, width: int, searchsorted: Any) -> tuple[Any, Any, Any]:
    """Sorted run boundaries in the buffer -> each run's item, 1-based start in the image and length.

    Written with operators only, so that ``bounds`` and ``meta`` may be numpy arrays or torch tensors.
    """
    item, y0, x0, stride, offset = meta
    starts, ends = bounds[0::2], bounds[1::2]  # the buffer starts with a 0 and ends each box with one
    k = searchsorted(offset, starts) - 1
    local = starts - offset[k]
    image_starts = (y0[k] + local // stride[k]) * width + x0[k] + local % stride[k] + 1
    return item[k], image_starts, ends - starts


def _runs_numpy(boxes: list[tuple[int, int, int, Any]], width: int) -> tuple[np.ndarray, ...]:
    """Runs of numpy box masks: (item, 1-based start, length), each (n,) int64."""
    meta, size = _layout(boxes, width)
    buf = np.zeros(size, dtype=bool)
    for (_, _, _, mask), stride, offset in zip(boxes, meta[3], meta[4]):
        h, w = mask.shape
        buf[offset : offset + h * stride].reshape(h, stride)[:, :w] = mask
    bounds = np.flatnonzero(buf[1:] != buf[:-1]) + 1
    return _to_image(bounds, meta, width, lambda a, v: np.searchsorted(a, v, side="right"))


def _runs_torch(boxes: list[tuple[int, int, int, Any]], width: int) -> tuple[np.ndarray, ...]:
    """Runs of torch box masks, found on the masks' device and copied to the host in one transfer."""
    import torch

    device = next(m.device for *_, m in boxes if isinstance(m, torch.Tensor))
    meta, size = _layout(boxes, width)
    buf = torch.zeros(size, dtype=torch.bool, device=device)
    for (_, _, _, mask), stride, offset in zip(boxes, meta[3].tolist(), meta[4].tolist()):
        h, w = mask.shape
        if not isinstance(mask, torch.Tensor):
            mask = torch.from_numpy(np.ascontiguousarray(mask))
        buf[offset : offset + h * stride].view(h, stride)[:, :w] = mask  # copied onto the device, cast to bool
    bounds = torch.nonzero(buf[1:] != buf[:-1])[:, 0] + 1
    meta_t = torch.from_numpy(meta).to(device)
    runs = _to_image(bounds, meta_t, width, lambda a, v: torch.searchsorted(a, v.contiguous(), right=True))
    return tuple(torch.stack(runs).cpu().numpy())


def rle_runs_boxes(items: Sequence[Box], height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Runs of C masks held only inside boxes of a (height, width) image, as in :func:`rle_encode_boxes`.

    Returns per item ``(starts, lengths)``, two (n,) int64 numpy arrays: 1-based starts in the row-major image,
    ascending, and run lengths; n = 0 for None or a box without ones.
    """
    boxes = _check_boxes(items, height, width)
    if not boxes:
        item = start = length = np.zeros(0, dtype=np.int64)
    elif any(hasattr(m, "detach") for *_, m in boxes):
        item, start, length = _runs_torch(boxes, width)
    else:
        item, start, length = _runs_numpy(boxes, width)
    bounds = np.searchsorted(item, np.arange(len(items) + 1))
    return [(start[a:b], length[a:b]) for a, b in pairwise(bounds)]


def rle_encode_boxes(items: Sequence[Box], height: int, width: int) -> list[str]:
    """Encode C masks held only inside boxes of a (height, width) image; returns C strings, one per item.

    ``items[c]`` is None (empty mask) or ``(y0, x0, mask)``: ``mask`` a (h, w) bool numpy array or torch tensor
    (any device, any strides; nonzero = 1) with class c's pixels in ``[y0, y0 + h) x [x0, x0 + w)``, the
    image 0 elsewhere. Equal to ``rle_encode`` of the full mask. Torch masks are scanned on their device and
    their runs copied to the host once for all items.
    """
    return [_format(s, n) for s, n in rle_runs_boxes(items, height, width)]


def rle_pixels(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The pixels a competition RLE string sets in a (H, W) image: sorted, distinct flat indices (row-major,
    int64); runs that overlap count their pixels once. Costs O(pixels set), not O(image).

    Raises ValueError for a non-integer token, an odd number of values, a start < 1, a negative length
    or a run past the end of the image.
    """
    n = int(shape[0]) * int(shape[1])
    if not isinstance(rle, str):
        raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
    text = rle.strip()
    if not text:
        return np.zeros(0, dtype=np.int64)
    try:
        values = np.array([int(t) for t in text.split()], dtype=np.int64)
    except ValueError:
        raise ValueError("RLE contains a token that is not an integer") from None
    if values.size % 2:
        raise ValueError(f"RLE has an odd number of values ({values.size})")
    starts, lengths = values[0::2] - 1, values[1::2]
    if (starts < 0).any():
        raise ValueError("RLE start below 1")
    if (lengths < 0).any():
        raise ValueError("RLE has a negative run length")
    ends = starts + lengths
    if (ends > n).any():
        raise ValueError(f"RLE run ends at pixel {int(ends.max())}, past the {shape[0]}x{shape[1]} image ({n} pixels)")
    # Pixel k of the concatenated runs lies in run r = repeat index; its offset within the run is k minus the
    # run's first position in the concatenation.
    first = np.cumsum(lengths) - lengths
    pixels = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    ordered = bool((starts[1:] >= ends[:-1]).all())  # sorted, non-overlapping runs (what an encoder writes)
    return pixels if ordered else np.unique(pixels)


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a competition RLE string into a (H, W) uint8 {0, 1} mask (raises as :func:`rle_pixels`)."""
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros(h * w, dtype=np.uint8)
    mask[rle_pixels(rle, (h, w))] = 1
    return mask.reshape(h, w)
