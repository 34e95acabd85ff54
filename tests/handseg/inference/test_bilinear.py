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
POWER_OF_TWO = [((29, 128, 128), (512, 512)), ((3, 16, 40), (128, 80)), ((2, 33, 17), (66, 17)), ((1, 8, 8), (32, 32))]


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


@pytest.mark.parametrize("shape, out_hw", POWER_OF_TWO)
def test_windows_of_a_power_of_two_resize_are_cut_from_a_crop_bit_for_bit(shape, out_hw):
    """Enlarged by a power of two, a window is PyTorch's resize of the cells it reads (plus one each side)."""
    grid = torch.randn(*shape, generator=torch.Generator().manual_seed(3)) * 6
    ref = F.interpolate(grid[None], size=out_hw, mode="bilinear", align_corners=False)[0]
    rng = random.Random(1)
    for _ in range(60):
        y0, x0 = rng.randrange(out_hw[0]), rng.randrange(out_hw[1])
        y1 = rng.randrange(y0 + 1, min(out_hw[0], y0 + rng.choice([2, 9, 40, 600])) + 1)
        x1 = rng.randrange(x0 + 1, min(out_hw[1], x0 + rng.choice([2, 9, 40, 600])) + 1)
        assert torch.equal(upsample_region(grid, out_hw, y0, y1, x0, x1), ref[:, y0:y1, x0:x1])


def test_small_windows_of_a_power_of_two_resize_are_exact():
    """A window is resized from a crop of the grid; crops whose output height + width is at most 128 would take
    PyTorch's separable kernel (other rounding), so they are widened: every small window is still exact."""
    grid = torch.randn(1, 128, 128, generator=torch.Generator().manual_seed(2)) * 6
    ref = F.interpolate(grid[None], size=(512, 512), mode="bilinear", align_corners=False)[0]
    for y0, x0, side in [(0, 0, 1), (3, 7, 2), (200, 300, 5), (508, 510, 4), (100, 0, 17), (0, 500, 12)]:
        y1, x1 = min(y0 + side, 512), min(x0 + side, 512)
        assert torch.equal(upsample_region(grid, (512, 512), y0, y1, x0, x1), ref[:, y0:y1, x0:x1])


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
