"""Perturbations: geometric kinds move image and labels identically; photometric kinds keep labels and shapes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from evaluator.perturb import (
    GEOMETRIC_KINDS,
    KINDS,
    MATRICES,
    PHOTOMETRIC_KINDS,
    Perturbation,
    add_noise,
    adjust_brightness,
    adjust_contrast,
    adjust_gamma,
    blur,
    jpeg,
    rotation_matrix,
    warp_polygons,
)
from handseg.format.classes import CLASSES
from handseg.format.metrics import dice_counts, dice_from_counts
from handseg.format.rasterize import rasterize
from handseg.phantom import render_hand

GEOMETRIC_CASES = [
    ("rotation", -30.0), ("rotation", 15.0), ("rotation", 40.0),
    ("zoom", 0.75), ("zoom", 1.1), ("zoom", 1.25),
    ("translation", 0.1), ("translation", -0.05),
]


def _hand(seed: int, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    image, polygons = render_hand(seed, size=size)
    return image, [polygons[c] for c in CLASSES]


def _warp_masks_nearest(masks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 masks warped channel by channel with nearest-neighbour sampling."""
    h, w = masks.shape[1:]
    return np.stack([cv2.warpAffine(m, matrix, (w, h), flags=cv2.INTER_NEAREST) for m in masks])


def _boundary_band(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels within 1 px (8-neighbourhood) of the mask's boundary, on either side."""
    kernel = np.ones((3, 3), np.uint8)
    return cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize("kind, strength", GEOMETRIC_CASES)
def test_warped_polygons_match_warped_masks_off_the_boundary(kind, strength, seed):
    image, polygons = _hand(seed, 256)
    matrix = MATRICES[kind](image.shape, strength)
    moved = rasterize(warp_polygons(polygons, matrix, image.shape), image.shape)
    warped = _warp_masks_nearest(rasterize(polygons, image.shape), matrix)
    assert moved.shape == warped.shape == (29, 256, 256)
    for c in range(29):
        differ = moved[c] != warped[c]
        off_boundary = differ & ~_boundary_band(moved[c]) & ~_boundary_band(warped[c])
        assert not off_boundary.any(), f"{CLASSES[c]}: {int(off_boundary.sum())} pixels differ off the boundary"


@pytest.mark.parametrize("kind, strength", [("rotation", -30.0), ("rotation", 30.0), ("zoom", 0.75),
                                            ("zoom", 1.25), ("translation", 0.1)])
def test_warped_labels_dice_at_full_resolution(kind, strength):
    # Dice depends on resolution (a boundary pixel is a larger share of a small bone), so at 2048 x 2048.
    image, polygons = _hand(3, 2048)
    matrix = MATRICES[kind](image.shape, strength)
    moved = rasterize(warp_polygons(polygons, matrix, image.shape), image.shape)
    warped = _warp_masks_nearest(rasterize(polygons, image.shape), matrix)
    counts = dice_counts(moved, warped)
    assert dice_from_counts(counts).mean() >= 0.99  # the competition's mean over classes
    assert dice_from_counts(counts.sum(axis=0)) >= 0.99  # all bone pixels together


def test_image_and_polygons_share_the_pixel_centre_convention():
    # A quarter turn about ((W - 1) / 2, (H - 1) / 2) maps pixel centres onto pixel centres: (x, y) -> (y, W - 1 - x),
    # which is np.rot90. The image and the vertices must both follow it exactly.
    image, polygons = _hand(1, 256)
    assert np.array_equal(Perturbation("rotation", 90.0).apply(image, polygons)[0], np.rot90(image))
    moved = warp_polygons(polygons, rotation_matrix(image.shape, 90.0), image.shape)
    for before, after in zip(polygons, moved):
        expected = np.stack([before[:, 1], 255 - before[:, 0]], axis=1)
        np.testing.assert_allclose(after, expected, atol=1e-9)


def test_integer_translation_shifts_image_and_masks_exactly():
    image, polygons = _hand(2, 256)
    shifted = np.zeros_like(image)
    shifted[16:, 16:] = image[:-16, :-16]
    assert np.array_equal(Perturbation("translation", 16 / 256).apply(image, polygons)[0], shifted)
    masks = rasterize(polygons, image.shape)
    expected = np.zeros_like(masks)
    expected[:, 16:, 16:] = masks[:, :-16, :-16]
    moved = rasterize(warp_polygons(polygons, MATRICES["translation"](image.shape, 16 / 256), image.shape),
                      image.shape)
    # The forearm is clipped at the bottom row, where the cut edge runs through pixel centres (fillPoly's boundary
    # rule may take one pixel more there); everywhere else the shift is exact.
    assert np.array_equal(moved[:, :-1, :-1], expected[:, :-1, :-1])
    assert (moved != expected).sum() <= 2


def test_identity_strengths_change_nothing():
    image, polygons = _hand(4, 256)
    for kind, strength in [("rotation", 0.0), ("zoom", 1.0), ("translation", 0.0), ("gamma", 1.0),
                           ("contrast", 1.0), ("noise", 0.0), ("blur", 0.0)]:
        out, moved = Perturbation(kind, strength).apply(image, polygons, seed=7)
        assert np.array_equal(out, image), kind
        assert np.array_equal(rasterize(moved, image.shape), rasterize(polygons, image.shape)), kind


def test_polygons_are_clipped_to_the_frame_and_lost_ones_become_empty():
    image, polygons = _hand(0, 256)
    _, moved = Perturbation("zoom", 1.6).apply(image, polygons)
    for poly in moved:
        assert poly.ndim == 2 and poly.shape[1] == 2
        if len(poly):
            assert poly.min() >= 0.0 and poly[:, 0].max() <= 255.0 and poly[:, 1].max() <= 255.0
    # Moving everything three quarters of the side right and down leaves no bone in the frame.
    _, gone = Perturbation("translation", 0.75).apply(image, polygons)
    assert all(p.shape == (0, 2) for p in gone)
    assert not rasterize(gone, image.shape).any()


@pytest.mark.parametrize("kind, strength", [("gamma", 0.6), ("gamma", 1.7), ("contrast", 0.7), ("contrast", 1.3),
                                            ("brightness", -20.0), ("brightness", 25.0), ("noise", 10.0),
                                            ("blur", 2.0), ("jpeg", 30.0)])
def test_photometric_kinds_keep_labels_shape_and_dtype(kind, strength):
    image, polygons = _hand(1, 128)
    out, same = Perturbation(kind, strength).apply(image, polygons, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert len(same) == len(polygons) and all(a is b for a, b in zip(same, polygons))
    again, _ = Perturbation(kind, strength).apply(image, polygons, seed=3)
    assert np.array_equal(out, again)


def test_photometric_directions():
    image, _ = _hand(1, 128)
    mid = image[(image > 60) & (image < 200)]
    assert mid.size
    assert (adjust_gamma(mid, 0.6) >= mid).all() and (adjust_gamma(mid, 1.7) <= mid).all()
    assert adjust_contrast(image, 1.3).std() > image.std() > adjust_contrast(image, 0.7).std()
    assert abs(float(adjust_contrast(image, 0.7).mean()) - float(image.mean())) < 1.0
    assert np.array_equal(adjust_brightness(mid, 20).astype(int), np.minimum(mid.astype(int) + 20, 255))
    assert adjust_brightness(np.array([3, 250], np.uint8), -10).tolist() == [0, 240]
    noisy = add_noise(image, 10.0, seed=1)
    assert np.array_equal(noisy, add_noise(image, 10.0, seed=1))
    assert not np.array_equal(noisy, add_noise(image, 10.0, seed=2))
    assert 8.0 < float((noisy.astype(float) - image)[(image > 40) & (image < 215)].std()) < 12.0
    assert blur(image, 3.0).astype(float).var() < blur(image, 1.0).astype(float).var() < image.astype(float).var()
    err = {q: np.abs(jpeg(image, q).astype(int) - image).mean() for q in (30, 90)}
    assert err[30] > err[90] > 0


def test_geometric_images_move_like_their_labels():
    # A bright square drawn from a polygon, warped as an image, lands where the warped polygon is rasterised.
    image = np.zeros((128, 128), np.uint8)
    square = np.array([[40, 40], [80, 40], [80, 80], [40, 80]], np.int32)
    image[rasterize([square], image.shape)[0] > 0] = 255
    for kind, strength in [("rotation", 30.0), ("zoom", 1.25), ("translation", 0.1)]:
        moved = rasterize(warp_polygons([square], MATRICES[kind](image.shape, strength), image.shape), image.shape)[0]
        bright = (Perturbation(kind, strength).apply(image, [square])[0] >= 128).astype(np.uint8)
        differ = (bright != moved) & ~_boundary_band(moved)
        assert not differ.any(), kind


def test_kinds_and_bad_strengths():
    assert set(KINDS) == set(GEOMETRIC_KINDS) | set(PHOTOMETRIC_KINDS) and len(KINDS) == 9
    assert Perturbation("rotation", 10).geometric and not Perturbation("blur", 1).geometric
    for kind, strength in [("zoom", 0.0), ("gamma", -1.0), ("jpeg", 30.5), ("jpeg", 0), ("translation", 1.0),
                           ("noise", -1.0), ("brightness", 300.0), ("shear", 1.0)]:
        with pytest.raises(ValueError, match=kind):
            Perturbation(kind, strength)
    with pytest.raises(ValueError, match="uint8"):
        Perturbation("gamma", 0.8).apply(np.zeros((8, 8), np.float32), [])
