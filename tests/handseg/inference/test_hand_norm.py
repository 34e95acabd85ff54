"""Hand normalisation: the factor, the angle, the affine map, and the normalised pass through the one inference
path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handseg.format.classes import NUM_CLASSES
from handseg.format.metrics import dice_from_counts, dice_score
from handseg.inference.engine import Engine
from handseg.inference.hand_norm import (
    CARPAL_CLASSES,
    FINGER_CLASSES,
    HandNorm,
    describe_reference,
    hand_angle,
    hand_centre,
    hand_fraction,
    normalising_affine,
    rescale_factor,
    rotation_angle,
    unwarp_masks,
    unwarp_probs,
    warp_image,
)
from handseg.inference.pipeline import predict_probs, whole_image_logits
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.io import InputSpec
from tests.handseg.synthetic import pointing_hand, two_level_logits

SIDE = 128  # the model's input side in these tests


def _bright(x: torch.Tensor) -> torch.Tensor:
    """Toy logits that find the bright pixels: 4x average pooling (the SegFormer stride) of the first channel."""
    return (4 * F.avg_pool2d(x[:, :1], 4)).repeat(1, NUM_CLASSES, 1, 1)


ENGINE = Engine(fn=_bright)
SPEC = InputSpec(mode="resize", image_size=SIDE, tile_size=SIDE)


def _hand(radius: float, centre=(0.5, 0.5), side: int = 512) -> np.ndarray:
    """A bright ellipse (the hand) on black, ``radius`` and ``centre`` as fractions of the side."""
    img = np.zeros((side, side), np.uint8)
    cy, cx = (int(c * side) for c in centre)
    cv2.ellipse(img, (cx, cy), (int(radius * side * 0.8), int(radius * side)), 20, 0, 360, 255, -1)
    return img


def _mask_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two (H, W) masks."""
    return float(dice_score(pred[None], truth[None])[0])


def _dice(probs: torch.Tensor, image: np.ndarray) -> float:
    """Dice of the first class's probabilities (cut at 0.5) against the image's bright pixels."""
    return _mask_dice(probs[0].numpy() > 0.5, image > 0)


def test_rescale_factor_undoes_a_zoom_within_its_range():
    norm = HandNorm(reference_fraction=0.1)
    assert rescale_factor(0.1, norm) == 1.0
    assert rescale_factor(0.09, norm) == 1.0  # within the tolerance: the first pass stands
    assert rescale_factor(0.1 * 0.75 ** 2, norm) == pytest.approx(1 / 0.75)  # a hand shrunk by 0.75
    assert rescale_factor(0.1 * 1.25 ** 2, norm) == pytest.approx(0.8)
    assert rescale_factor(0.001, norm) == 1.4 and rescale_factor(0.9, norm) == 0.75  # clipped
    assert rescale_factor(0.0, norm) == 1.0  # no hand seen: nothing to scale by


@pytest.mark.parametrize("data, key", [({"reference_fraction": 0.0}, "reference_fraction"),
                                       ({"reference_fraction": 0.1, "tolerance": 1.0}, "tolerance"),
                                       ({"reference_fraction": 0.1, "max_factor": 0.9}, "min_factor"),
                                       ({"reference_fraction": 0.1, "reference_angle": 200}, "reference_angle"),
                                       ({"reference_fraction": 0.1, "angle_spread": -1}, "angle_spread"),
                                       ({"reference_fraction": 0.1, "zoom": 1}, "zoom")])
def test_bad_hand_norm_names_the_key(data, key):
    with pytest.raises(ValueError, match=key):
        HandNorm.from_dict(data)


def test_normalising_affine_puts_the_hand_in_the_middle_at_the_factor():
    m = normalising_affine((400, 600), 1.25, (0.25, 0.75))
    hand = np.array([0.75 * 600 - 0.5, 0.25 * 400 - 0.5, 1.0])  # x, y of the hand's centre (pixel centres)
    np.testing.assert_allclose(m @ hand, [299.5, 199.5])
    np.testing.assert_allclose(m[:, :2], np.diag([1.25, 1.25]))


def test_normalising_affine_rotates_about_the_hand():
    m = normalising_affine((400, 600), 0.8, (0.25, 0.75), degrees=30.0)
    hand = np.array([0.75 * 600 - 0.5, 0.25 * 400 - 0.5])
    np.testing.assert_allclose(m[:, :2] @ hand + m[:, 2], [299.5, 199.5])
    up = m[:, :2] @ np.array([0.0, -1.0])  # a step up the screen turns counter-clockwise, towards the left
    np.testing.assert_allclose(up, 0.8 * np.array([-np.sin(np.radians(30)), -np.cos(np.radians(30))]), atol=1e-12)


@pytest.mark.parametrize("factor, centre, degrees", [(1.33, (0.5, 0.5), 0.0), (0.8, (0.4, 0.6), 0.0),
                                                     (1.2, (0.3, 0.7), 0.0), (1.0, (0.45, 0.55), 35.0),
                                                     (1.25, (0.4, 0.5), -50.0)])
def test_masks_and_probabilities_map_back_where_they_came_from(factor, centre, degrees):
    """Warp a rasterised hand, map it back: the masks (box by box) and the probabilities (full map) land on the
    hand again, up to boundary pixels."""
    from handseg.format.class_masks import ClassMasks

    image = _hand(0.2, centre, side=300)
    matrix = normalising_affine(image.shape, factor, centre, degrees)
    warped = warp_image(image, matrix)
    assert abs((warped > 127).mean() / (image > 127).mean() - factor ** 2) < 0.05
    dense = np.stack([warped > 127, np.zeros_like(warped, bool), warped > 127])
    back = unwarp_masks(ClassMasks.from_dense(dense), matrix)
    assert back.boxes[1] is None and back.height == 300
    truth = ClassMasks.from_dense(np.stack([image > 127] * 3))
    dice = dice_from_counts(back.counts(truth)[None])[0]
    assert dice[0] > 0.99 and dice[2] > 0.99
    probs = unwarp_probs(torch.from_numpy(dense.astype(np.float32)), matrix)
    assert probs.shape == (3, 300, 300)
    agree = (back.to_dense()[0] == (probs[0] >= 0.5)).float().mean()
    assert agree > 0.999


def test_rotation_angle_brings_a_hand_back_to_the_edge_of_the_spread():
    norm = HandNorm(reference_fraction=0.1, reference_angle=90.0, angle_spread=20.0)
    assert rotation_angle(90.0, norm) == 0.0 and rotation_angle(114.0, norm) == 0.0  # within spread + 5 degrees
    assert rotation_angle(130.0, norm) == pytest.approx(-20.0)  # 40 off counter-clockwise: turned back by 20
    assert rotation_angle(45.0, norm) == pytest.approx(25.0)
    assert rotation_angle(-120.0, norm) == pytest.approx(-130.0)  # the short way round
    assert rotation_angle(None, norm) == 0.0  # no axis seen
    assert rotation_angle(130.0, HandNorm(reference_fraction=0.1)) == 0.0  # no reference angle
    wrapped = HandNorm(reference_fraction=0.1, reference_angle=175.0, angle_spread=5.0)
    assert rotation_angle(-165.0, wrapped) == pytest.approx(-15.0)


def _axis_logits(degrees: float, side: int = 64) -> torch.Tensor:
    """Logits (29, side, side): a carpal blob at the centre and a finger blob 20 px away at ``degrees``."""
    logits = torch.full((NUM_CLASSES, side, side), -1.0)
    c = side // 2
    logits[CARPAL_CLASSES[2], c - 2:c + 3, c - 2:c + 3] = 1.0
    fy, fx = round(c - 20 * np.sin(np.radians(degrees))), round(c + 20 * np.cos(np.radians(degrees)))
    logits[FINGER_CLASSES[5], fy - 2:fy + 3, fx - 2:fx + 3] = 1.0
    return logits


@pytest.mark.parametrize("degrees", [90.0, 30.0, -135.0, 180.0])
def test_hand_angle_points_from_the_carpals_to_the_fingers(degrees):
    measured = hand_angle(_axis_logits(degrees), (512, 512))
    assert abs((measured - degrees + 180) % 360 - 180) < 3.0
    squeezed = hand_angle(_axis_logits(45.0), (512, 1024))  # a grid over a wide image: x counts twice
    assert squeezed == pytest.approx(np.degrees(np.arctan2(1, 2)), abs=3.0)
    no_carpals = _axis_logits(90.0)
    no_carpals[list(CARPAL_CLASSES)] = -1.0
    assert hand_angle(no_carpals, (512, 512)) is None


def test_reference_in_words():
    assert describe_reference(None) == "off"
    assert describe_reference({"reference_fraction": 0.1}) == "hand covers 0.100 of the image"
    entry = HandNorm(0.1, reference_angle=91.5, angle_spread=20.6).to_dict()
    assert describe_reference(entry) == "hand covers 0.100 of the image, axis at 91.5 +- 20.6 degrees"
    assert HandNorm.from_dict(entry) == HandNorm(0.1, reference_angle=91.5, angle_spread=20.6)


def test_hand_fraction_and_centre():
    logits = torch.full((NUM_CLASSES, 20, 20), -1.0)
    logits[3, 2:6, 10:20] = 1.0
    assert hand_fraction(logits) == pytest.approx(40 / 400)
    assert hand_centre(logits) == pytest.approx((4 / 20, 15 / 20))
    assert hand_centre(torch.full((NUM_CLASSES, 8, 8), -1.0)) == (0.5, 0.5)


def _reference() -> HandNorm:
    return HandNorm(reference_fraction=hand_fraction(whole_image_logits(ENGINE, _hand(0.3), InferenceSettings(SPEC))))


@pytest.mark.parametrize("radius, centre", [(0.3 * 0.6, (0.5, 0.5)), (0.3 * 0.6, (0.3, 0.65)), (0.42, (0.5, 0.5))])
def test_a_hand_off_the_reference_size_is_normalised_and_mapped_back(radius, centre):
    """A hand far from the reference size is predicted on the normalised image and mapped back: its mask matches
    the hand (a misplaced map would shift it), and masks and probabilities agree."""
    from handseg.inference.pipeline import normalised_outputs, predict_masks

    image = _hand(radius, centre)
    settings = InferenceSettings(SPEC, hand_norm=_reference())
    assert normalised_outputs(ENGINE, image, settings, "cpu", None)[1] is not None
    probs = predict_probs(ENGINE, image, settings)
    assert _dice(probs, image) > 0.98
    masks = predict_masks(InferenceCall(ENGINE, settings), image)
    truth = image > 0
    pred = masks.to_dense()[0].numpy()
    assert _mask_dice(pred, truth) > 0.98
    other = (probs[0] > 0.5).numpy()
    assert _mask_dice(pred, other) > 0.99  # the two maps back differ at the boundary


def test_a_hand_of_the_reference_size_is_left_alone():
    from handseg.inference.pipeline import predict_masks

    image = _hand(0.31)
    normed = InferenceSettings(SPEC, hand_norm=_reference())
    torch.testing.assert_close(predict_probs(ENGINE, image, normed),
                               predict_probs(ENGINE, image, InferenceSettings(SPEC)), rtol=0, atol=0)
    assert torch.equal(predict_masks(InferenceCall(ENGINE, normed), image).to_dense(),
                       predict_masks(InferenceCall(ENGINE, InferenceSettings(SPEC)), image).to_dense())


def test_flip_tta_on_an_equivariant_engine_equals_no_tta_when_normalised():
    image = _hand(0.18, (0.45, 0.55))
    plain = predict_probs(ENGINE, image, InferenceSettings(SPEC, hand_norm=_reference()))
    tta = predict_probs(ENGINE, image, InferenceSettings(SPEC, hand_norm=_reference(), flip_tta=True))
    torch.testing.assert_close(tta, plain, rtol=0, atol=1e-5)


def test_a_cascade_is_normalised_by_its_stage1():
    from handseg.inference.pipeline import normalised_outputs

    cascade = Engine(fn=lambda x: _bright(x[:, :3]), prior=ENGINE)
    spec = InputSpec(mode="tile", image_size=SIDE, tile_size=SIDE, overlap=0.25, prior=SPEC)
    image = _hand(0.18, (0.45, 0.5))
    settings = InferenceSettings(spec, hand_norm=_reference())
    first = whole_image_logits(cascade, image, settings)
    assert first.shape == (NUM_CLASSES, SIDE // 4, SIDE // 4)
    assert normalised_outputs(cascade, image, settings, "cpu", None)[1] is not None
    assert _dice(predict_probs(cascade, image, settings), image) > 0.97


@pytest.mark.parametrize("degrees", [45.0, -60.0])
def test_a_rotated_hand_is_turned_back_and_its_masks_mapped_back(degrees):
    """A hand turned beyond the reference spread is predicted turned back (by the excess) and its masks land on
    it again; one within the spread is left alone."""
    from handseg.inference.pipeline import normalised_outputs, predict_masks

    engine, spec = Engine(fn=two_level_logits), InputSpec(mode="resize", image_size=256, tile_size=256)
    upright = whole_image_logits(engine, pointing_hand(0.0), InferenceSettings(spec))
    assert hand_angle(upright, (512, 512)) == pytest.approx(90.0, abs=1.0)
    norm = HandNorm(hand_fraction(upright), reference_angle=90.0, angle_spread=10.0)
    settings = InferenceSettings(spec, hand_norm=norm)
    image = pointing_hand(degrees)
    matrix = normalised_outputs(engine, image, settings, "cpu", None)[1]
    turned = np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0]))  # counter-clockwise on screen
    assert turned == pytest.approx(-(degrees - np.copysign(10.0, degrees)), abs=2.0)  # back to the spread
    masks = predict_masks(InferenceCall(engine, settings), image).to_dense().numpy()
    fingers, carpals = image >= 200, (image > 100) & (image < 180)
    for pred, truth in ((masks[FINGER_CLASSES[0]], fingers), (masks[CARPAL_CLASSES[0]], carpals)):
        assert _mask_dice(pred, truth) > 0.93  # a wrong map back: far below
    assert normalised_outputs(engine, pointing_hand(12.0), settings, "cpu", None)[1] is None
