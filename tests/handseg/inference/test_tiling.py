"""Tile placement and blending weights (pure functions), checked against MONAI's own functions."""

from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from handseg.inference.tiling import (
    constant_importance,
    coverage,
    gaussian_importance,
    pad_amounts,
    tile_starts,
    tile_windows,
)


def test_tile_starts_hand_worked():
    assert tile_starts(256, 128, 0.25) == [0, 96, 128]
    assert tile_starts(2048, 512, 0.25) == [0, 384, 768, 1152, 1536]
    assert tile_starts(2048, 1024, 0.5) == [0, 512, 1024]
    assert tile_starts(128, 128, 0.25) == [0]
    assert tile_starts(100, 128, 0.25) == [0]
    assert tile_starts(130, 128, 0.0) == [0, 2]


@pytest.mark.parametrize("length", [128, 129, 200, 256, 300, 511, 512, 777, 2048])
@pytest.mark.parametrize("tile, overlap", [(128, 0.25), (128, 0.5), (64, 0.0), (96, 0.1)])
def test_tile_starts_match_monai(length, tile, overlap):
    interval = _get_scan_interval((length,), (tile,), 1, (overlap,))
    monai_starts = [s[0].start for s in dense_patch_slices((length,), (tile,), interval)]
    assert tile_starts(length, tile, overlap) == monai_starts


@pytest.mark.parametrize("h, w", [(256, 256), (200, 176), (100, 300), (129, 1000), (64, 64)])
def test_every_pixel_is_covered_and_windows_fit(h, w):
    tile = 128
    counts = coverage(h, w, tile, 0.25)
    assert counts.shape == (max(h, tile), max(w, tile))
    assert int(counts.min()) >= 1
    for y, x in tile_windows(max(h, tile), max(w, tile), tile, 0.25):
        assert 0 <= y and y + tile <= max(h, tile) and 0 <= x and x + tile <= max(w, tile)


def test_windows_are_row_major_and_unique():
    windows = tile_windows(300, 200, 128, 0.25)
    assert windows == sorted(windows) and len(set(windows)) == len(windows)
    assert len(windows) == len(tile_starts(300, 128, 0.25)) * len(tile_starts(200, 128, 0.25))


def test_short_side_is_padded_symmetrically():
    assert pad_amounts(100, 128) == (14, 14)
    assert pad_amounts(101, 128) == (13, 14)
    assert pad_amounts(128, 128) == (0, 0) and pad_amounts(300, 128) == (0, 0)


@pytest.mark.parametrize("tile_hw", [(128, 128), (64, 96), (512, 512)])
def test_gaussian_matches_monai(tile_hw):
    ours = gaussian_importance(tile_hw, 0.125)
    ref = compute_importance_map(tile_hw, mode="gaussian", sigma_scale=0.125)
    assert ours.dtype == torch.float32 and ours.shape == tile_hw
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-7)


def test_gaussian_shape():
    w = gaussian_importance((128, 128))
    assert float(w.max()) <= 1.0 and float(w.max()) > 0.99
    assert float(w.min()) >= 1e-3 - 1e-9
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    torch.testing.assert_close(w, w.T)
    assert w[64, 64] > w[64, 100] > w[64, 127]


def test_constant_importance():
    assert torch.equal(constant_importance((8, 4)), torch.ones(8, 4))


def test_bad_arguments():
    with pytest.raises(ValueError):
        tile_starts(100, 0, 0.25)
    with pytest.raises(ValueError):
        tile_starts(100, 64, 1.0)
