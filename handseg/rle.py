"""Run-length encoding exactly as the competition: row-major, 1-based starts, ``start length`` pairs.

A (H, W) mask is flattened row by row; each run of ones is written as its 1-based start and its length,
all numbers space-separated; an empty mask is the empty string. Example: the 2x3 mask
``[[0, 1, 1], [1, 0, 1]]`` flattens to ``0 1 1 1 0 1`` and encodes to ``"2 3 6 1"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_numpy(x: Any) -> np.ndarray:
    """numpy array or torch tensor -> numpy array on the CPU."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_bytes(masks: np.ndarray) -> np.ndarray:
    """Any {0, nonzero} array -> uint8 {0, 1} view or copy of the same shape (bool is viewed, not copied)."""
    if masks.dtype == np.bool_:
        return masks.view(np.uint8)
    if masks.dtype == np.uint8 and masks.size and masks.max() <= 1:
        return masks
    return (masks != 0).view(np.uint8)


def rle_encode(mask: Any) -> str:
    """Encode one (H, W) mask (bool/uint8/any numeric, numpy or torch; nonzero = 1) as the competition RLE."""
    mask = _as_numpy(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {mask.shape}")
    return rle_encode_many(mask[None])[0]


def _boundaries_dense(stream: np.ndarray) -> np.ndarray:
    """Sorted b in [1, n) with stream[b-1] != stream[b], by comparing every pixel with its successor."""
    return np.flatnonzero(stream[1:] != stream[:-1]) + 1


_BLOCK = 64  # words per block in the two-level search (512 pixels)


def _nonzero_words(words: np.ndarray) -> np.ndarray:
    """Indices of nonzero uint64 words: blocks with any foreground first (cheap ``any``), then inside them."""
    if words.size % _BLOCK:
        return np.flatnonzero(words)
    blocks = words.reshape(-1, _BLOCK)
    active = np.flatnonzero(blocks.any(axis=1))
    inner = np.flatnonzero(blocks[active])
    return active[inner // _BLOCK] * _BLOCK + inner % _BLOCK


def _boundaries_sparse(stream: np.ndarray) -> np.ndarray:
    """Same as :func:`_boundaries_dense` for len(stream) % 8 == 0, touching only 8-pixel words that hold a 1.

    Masks are mostly background: one ``flatnonzero`` over the stream read as uint64 words finds the few
    words with foreground; every change of value lies inside such a word or right after its last byte.
    """
    words = stream.view(np.uint64)
    nz = _nonzero_words(words)
    if nz.size == 0:
        return nz
    cur = words[nz].view(np.uint8).reshape(-1, 8)  # the 8 pixels of each word with foreground
    prev = np.empty_like(cur)
    prev[:, 1:] = cur[:, :-1]
    prev[:, 0] = stream[np.maximum(nz * 8 - 1, 0)]
    if nz[0] == 0:
        prev[0, 0] = cur[0, 0]  # no boundary before the first pixel
    inside = np.flatnonzero(cur != prev)
    inside = nz[inside // 8] * 8 + inside % 8
    # A run that ends exactly at a word edge followed by an all-zero word (or the end of the stream).
    next_empty = np.ones(nz.size, dtype=bool)
    next_empty[:-1] = nz[1:] != nz[:-1] + 1
    edge = nz[next_empty & (cur[:, 7] != 0)] * 8 + 8
    edge = edge[edge < stream.size]
    out = np.concatenate((inside, edge))
    out.sort()
    return out


def rle_encode_many(masks: Any) -> list[str]:
    """Encode C masks (C, H, W) at once; returns C strings, one per channel.

    Vectorised over the whole stack: the C masks are read as one byte stream, every run boundary of every
    channel is found in one pass (on 8-pixel words, skipping background), and runs are assigned to their
    channel with integer arithmetic; only the final string formatting is per channel. Bool input is
    viewed as bytes, never copied.
    """
    masks = _as_numpy(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected (C, H, W) masks, got shape {masks.shape}")
    c, h, w = masks.shape
    n = h * w
    if c == 0:
        return []
    if n == 0:
        return [""] * c
    stream = _as_bytes(np.ascontiguousarray(masks)).reshape(-1)
    bounds = _boundaries_sparse(stream) if stream.size % 8 == 0 else _boundaries_dense(stream)
    # A boundary is a run start when the pixel after it is 1, otherwise the end of a run before it.
    is_start = stream[np.minimum(bounds, stream.size - 1)] == 1
    is_start &= bounds < stream.size
    starts, ends = bounds[is_start], bounds[~is_start]
    # Runs that touch a channel edge: first pixel set (start), last pixel set (end); a run continuing
    # from one channel into the next shows no change in the stream and needs both.
    first = np.flatnonzero(stream[::n]) * n
    last = (np.flatnonzero(stream[n - 1 :: n]) + 1) * n
    starts = np.union1d(starts, first)
    ends = np.union1d(ends, last)
    lengths = ends - starts
    channel = starts // n
    starts = starts - channel * n + 1
    split = np.searchsorted(channel, np.arange(1, c))
    out = []
    for s, n in zip(np.split(starts, split), np.split(lengths, split)):
        out.append(" ".join(map(str, np.stack([s, n], 1).ravel().tolist())) if s.size else "")
    return out


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a competition RLE string into a (H, W) uint8 {0, 1} mask.

    Raises ValueError for a non-integer token, an odd number of values, a start < 1, a negative length
    or a run past the end of the image.
    """
    h, w = int(shape[0]), int(shape[1])
    n = h * w
    mask = np.zeros(n, dtype=np.uint8)
    text = rle.strip() if isinstance(rle, str) else ""
    if not text:
        if not isinstance(rle, str):
            raise ValueError(f"RLE must be a string, got {type(rle).__name__}")
        return mask.reshape(h, w)
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
        raise ValueError(f"RLE run ends at pixel {int(ends.max())}, past the {h}x{w} image ({n} pixels)")
    delta = np.zeros(n + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    mask[:] = np.cumsum(delta[:-1]) > 0
    return mask.reshape(h, w)


def rle_encode_boxes(items, height: int, width: int) -> list[str]:
    """Placeholder: dense fallback until the box encoder lands."""
    out = []
    for item in items:
        dense = np.zeros((height, width), dtype=bool)
        if item is not None:
            y0, x0, m = item
            m = m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m)
            dense[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] = m
        out.append(rle_encode(dense))
    return out
