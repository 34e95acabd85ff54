"""Windows of the bilinear resize: bit-exact against F.interpolate of the whole map, and the covering range of
candidate cells."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from handseg.inference.bilinear import covering_range, upsample_region, upsample_window

SHAPES = [((29, 96, 96), (2048, 2048)), ((29, 32, 32), (128, 128)), ((4, 96, 96), (300, 200)),
          ((5, 24, 30), (97, 131)), ((3, 16, 16), (16, 16)), ((2, 7, 9), (1000, 3))]


@pytest.mark.parametrize("shape, out_hw", SHAPES)
def test_windows_equal_the_full_resize_bit_for_bit(shape, out_hw):
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(*shape, generator=g) * 6
    ref = F.interpolate(grid[None], size=out_hw, mode="bilinear", align_corners=False)[0]
    assert torch.equal(upsample_window(grid, out_hw, 0, out_hw[0], 0, out_hw[1]), ref)
    rng = random.Random(0)
    for _ in range(10):
        y0 = rng.randrange(out_hw[0])
        y1 = rng.randrange(y0 + 1, out_hw[0] + 1)
        x0 = rng.randrange(out_hw[1])
        x1 = rng.randrange(x0 + 1, out_hw[1] + 1)
        assert torch.equal(upsample_window(grid, out_hw, y0, y1, x0, x1), ref[:, y0:y1, x0:x1])
        assert torch.equal(upsample_region(grid, out_hw, y0, y1, x0, x1), ref[:, y0:y1, x0:x1])


@pytest.mark.parametrize("shape, out_hw", SHAPES)
def test_covering_range_holds_every_pixel_above_a_level(shape, out_hw):
    """A bilinear value never exceeds the cells it reads: pixels above a level lie in the covering range of the
    cells above it."""
    grid = torch.randn(*shape[1:], generator=torch.Generator().manual_seed(1)) * 6
    up = F.interpolate(grid[None, None], size=out_hw, mode="bilinear", align_corners=False)[0, 0]
    checked = 0
    for level in (1.0, 4.0, 8.0):
        cells = grid > level
        if not bool(cells.any()):
            continue
        rows, cols = cells.any(1).nonzero()[:, 0], cells.any(0).nonzero()[:, 0]
        ys, ye = covering_range(int(rows.min()), int(rows.max()), grid.shape[0], out_hw[0])
        xs, xe = covering_range(int(cols.min()), int(cols.max()), grid.shape[1], out_hw[1])
        hits = (up > level).nonzero()
        assert bool(((hits[:, 0] >= ys) & (hits[:, 0] < ye) & (hits[:, 1] >= xs) & (hits[:, 1] < xe)).all())
        checked += 1
    assert checked > 0
