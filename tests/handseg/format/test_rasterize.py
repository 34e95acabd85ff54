"""Rasterisation: native masks, exact crops, downscaling by polygon scaling, and bit packing (numpy, torch)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from handseg.format.rasterize import pack_bits, rasterize, rasterize_window, unpack_bits, unpack_label_batch
from tests.handseg.synthetic import blob, class_polygons

SIZE = 96


@pytest.fixture(scope="module")
def polygons() -> list[np.ndarray]:
    return list(class_polygons(SIZE, seed=1).values())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def area_downsample(masks: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """The reference: each native channel area-averaged to out_hw, kept where at least half covered."""
    return np.stack(
        [cv2.resize(m.astype(np.float32), out_hw[::-1], interpolation=cv2.INTER_AREA) >= 0.5 for m in masks]
    ).astype(np.uint8)


def test_hand_checked_rectangle_and_overlap():
    square = np.array([[1, 1], [4, 1], [4, 3], [1, 3]], dtype=np.int32)
    shifted = square + [2, 1]
    masks = rasterize([square, shifted, np.zeros((0, 2), np.int32)], (6, 7))
    assert masks.shape == (3, 6, 7) and masks.dtype == np.uint8
    expected0 = np.zeros((6, 7), np.uint8)
    expected0[1:4, 1:5] = 1  # vertices are pixel centres; the outline's pixels are inside
    np.testing.assert_array_equal(masks[0], expected0)
    np.testing.assert_array_equal(masks[1], np.roll(np.roll(expected0, 1, 0), 2, 1))
    assert masks[2].sum() == 0
    # Overlap stays multi-label: both channels set where the squares overlap.
    assert ((masks[0] == 1) & (masks[1] == 1)).sum() == 2 * 2


def test_native_matches_plain_fillpoly(polygons):
    masks = rasterize(polygons, (SIZE, SIZE))
    for c, poly in enumerate(polygons):
        ref = np.zeros((SIZE, SIZE), np.uint8)
        cv2.fillPoly(ref, [poly.reshape(-1, 1, 2)], 1)
        np.testing.assert_array_equal(masks[c], ref)
    assert masks.sum(axis=0).max() >= 2  # the fixture's blobs overlap somewhere


def test_windows_agree_exactly_with_native(polygons):
    full = rasterize(polygons, (SIZE, SIZE))
    rng = np.random.default_rng(0)
    windows = [(0, 0, SIZE, SIZE), (0, 0, 1, 1), (SIZE - 7, SIZE - 5, 7, 5)]
    windows += [tuple(int(v) for v in (*rng.integers(-10, SIZE - 5, 2), *rng.integers(1, 60, 2))) for _ in range(60)]
    for y0, x0, h, w in windows:
        crop = rasterize_window(polygons, (y0, x0, h, w))
        assert crop.shape == (len(polygons), h, w)
        ref = np.zeros_like(crop)
        ys, xs, ye, xe = max(y0, 0), max(x0, 0), min(y0 + h, SIZE), min(x0 + w, SIZE)
        if ye > ys and xe > xs:
            ref[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = full[:, ys:ye, xs:xe]
        np.testing.assert_array_equal(crop, ref, err_msg=f"window {(y0, x0, h, w)}")


def test_integer_downscale_equals_area_downsampled_native(polygons):
    full = rasterize(polygons, (SIZE, SIZE))
    for factor in (2, 4):
        out_hw = (SIZE // factor, SIZE // factor)
        small = rasterize(polygons, (SIZE, SIZE), out_hw)
        assert small.shape == (len(polygons), *out_hw) and small.dtype == np.uint8
        np.testing.assert_array_equal(small, area_downsample(full, out_hw))


def test_arbitrary_downscale_agrees_closely():
    size = 300
    poly = [blob(150, 140, 90, 55, n=40, phase=0.3), blob(120, 170, 40, 70, n=40, phase=1.0)]
    full = rasterize(poly, (size, size))
    for out_hw in ((113, 113), (75, 140), (256, 256)):
        small = rasterize(poly, (size, size), out_hw)
        ref = area_downsample(full, out_hw)
        for c in range(len(poly)):
            assert iou(small[c], ref[c]) > 0.9, (out_hw, c, iou(small[c], ref[c]))


def test_upscale_scales_vertices_about_pixel_centres():
    poly = [np.array([[2, 2], [9, 2], [9, 5], [2, 5]], np.int32)]
    big = rasterize(poly, (8, 12), (16, 24))
    # x = 2 -> (2 + 0.5) * 2 - 0.5 = 4.5, x = 9 -> 18.5, y = 2 -> 4.5, y = 5 -> 10.5; cv2 rounds halves up.
    expected = np.zeros((16, 24), np.uint8)
    expected[5:12, 5:20] = 1
    np.testing.assert_array_equal(big[0], expected)
    native = rasterize(poly, (8, 12))
    nearest = cv2.resize(native[0], (24, 16), interpolation=cv2.INTER_NEAREST)
    assert (big[0] <= nearest).all()


def test_window_with_rescale(polygons):
    full = rasterize(polygons, (SIZE, SIZE))
    y0, x0, h, w = 16, 8, 64, 80
    crop = rasterize_window(polygons, (y0, x0, h, w), out_hw=(32, 40))
    assert crop.shape == (len(polygons), 32, 40)
    np.testing.assert_array_equal(crop, area_downsample(full[:, y0 : y0 + h, x0 : x0 + w], (32, 40)))


def test_pack_unpack_round_trip(polygons):
    masks = rasterize(polygons, (SIZE, SIZE))
    packed = pack_bits(masks)
    assert packed.shape == (SIZE, SIZE) and packed.dtype == np.uint32
    np.testing.assert_array_equal(unpack_bits(packed, len(polygons)), masks)
    # Bit c is channel c.
    y, x = np.argwhere(masks[3])[0]
    assert (int(packed[y, x]) >> 3) & 1 == 1
    # A crop of the packed array unpacks to the same crop; bool input and 32 channels work.
    np.testing.assert_array_equal(unpack_bits(packed[10:20, 5:50], len(polygons)), masks[:, 10:20, 5:50])
    rnd = np.random.default_rng(0).random((32, 9, 7)) < 0.5
    np.testing.assert_array_equal(unpack_bits(pack_bits(rnd), 32), rnd.astype(np.uint8))


def test_pack_rejects_too_many_channels():
    with pytest.raises(ValueError):
        pack_bits(np.zeros((33, 2, 2), np.uint8))
    with pytest.raises(ValueError):
        unpack_bits(np.zeros((2, 2), np.int64), 3)


def test_torch_unpack_of_a_batch_equals_numpy_unpack(polygons):
    rng = np.random.default_rng(3)
    # Random 29-class packed batches (every bit pattern below bit 29), plus a real rasterised mask.
    packed = rng.integers(0, 2**29, size=(3, 17, 23), dtype=np.uint32)
    packed[0, :10, :20] = pack_bits(rasterize(polygons, (SIZE, SIZE)))[40:50, 30:50]
    labels = torch.from_numpy(packed.view(np.int32))
    out = unpack_label_batch(labels, 29)
    assert out.shape == (3, 29, 17, 23) and out.dtype == torch.float32
    expected = unpack_bits(packed, 29).transpose(1, 0, 2, 3)  # (29, B, h, w) -> (B, 29, h, w)
    np.testing.assert_array_equal(out.numpy(), expected)
    small = unpack_label_batch(labels, 29, torch.uint8)
    assert small.dtype == torch.uint8 and np.array_equal(small.numpy(), expected)
    # One (h, w) image, and all 32 bits (bit 31 is the int32 sign bit: the shift must still read it).
    full = rng.integers(0, 2**32, size=(5, 6), dtype=np.uint32)
    full[0, 0] = 0xFFFFFFFF
    got = unpack_label_batch(torch.from_numpy(full.view(np.int32)), 32)
    np.testing.assert_array_equal(got.numpy(), unpack_bits(full, 32))


def test_torch_unpack_rejects_other_dtypes_and_class_counts():
    with pytest.raises(ValueError, match="int32"):
        unpack_label_batch(torch.zeros(1, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError):
        unpack_label_batch(torch.zeros(1, 4, 4, dtype=torch.int32), num_classes=33)
