"""Tile placement and blending weights for sliding-window inference (pure functions).

Window placement follows MONAI's ``sliding_window_inference`` exactly (step ``int(tile * (1 - overlap))``,
the last window shifted back to end at the image border; a side shorter than the tile is padded
symmetrically to the tile), and so does the Gaussian importance map (nnU-Net style: peak 1 at the tile
centre, sigma = ``sigma_scale`` * tile side, clamped below at 1e-3), so the two agree to float rounding.
"""

from __future__ import annotations

import torch


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of windows of size ``tile`` covering ``[0, length)``; ``[0]`` when ``length <= tile``
    (the caller pads that side up to ``tile``). Consecutive windows overlap by about ``overlap * tile``."""
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if length <= tile:
        return [0]
    step = max(int(tile * (1 - overlap)), 1)
    count = -(-(length - tile) // step) + 1  # ceil((length - tile) / step) + 1
    return [min(i * step, length - tile) for i in range(count)]


def tile_windows(h: int, w: int, tile: int, overlap: float) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of all tiles for an image of ``h`` x ``w`` (row-major order)."""
    return [(y, x) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]


def pad_amounts(length: int, tile: int) -> tuple[int, int]:
    """``(before, after)`` padding that brings a side shorter than ``tile`` up to ``tile`` (symmetric, the
    odd pixel after); ``(0, 0)`` for a side at least as long as the tile."""
    diff = max(tile - length, 0)
    return diff // 2, diff - diff // 2


def gaussian_importance(tile_hw: tuple[int, int], sigma_scale: float = 0.125,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """Blending weights (th, tw) float32: separable Gaussian with sigma ``sigma_scale * side``, 1.0 at the
    centre, clamped below at 1e-3 so that tile borders still count where nothing else covers them."""
    weights = None
    for side in tile_hw:
        sigma = side * sigma_scale
        x = torch.arange(-(side - 1) / 2.0, (side - 1) / 2.0 + 1, dtype=torch.float32, device=device)
        g = torch.exp(x**2 / (-2 * sigma**2))
        weights = g if weights is None else weights.unsqueeze(-1) * g
    assert weights is not None
    floor = max(float(weights.min()), 1e-3)
    return weights.clamp_(min=floor)


def constant_importance(tile_hw: tuple[int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """Uniform blending weights (th, tw) float32 (plain averaging of overlapping tiles)."""
    return torch.ones(tuple(tile_hw), dtype=torch.float32, device=device)


def coverage(h: int, w: int, tile: int, overlap: float) -> torch.Tensor:
    """How many tiles cover each pixel of the (padded) image, (max(h, tile), max(w, tile)) int32; for tests
    and diagnostics."""
    ph, pw = max(h, tile), max(w, tile)
    counts = torch.zeros((ph, pw), dtype=torch.int32)
    for y, x in tile_windows(ph, pw, tile, overlap):
        counts[y:y + tile, x:x + tile] += 1
    return counts
