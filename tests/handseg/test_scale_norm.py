"""Hand-size normalisation: the factor, the window, and the second pass through the one inference path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handseg.classes import NUM_CLASSES
from handseg.engine import Engine
from handseg.inference import InferenceSettings, predict_probs, run_model, whole_image_logits
from handseg.metrics import dice_from_counts
from handseg.model_io import InputSpec
from handseg.scale_norm import (
    ScaleNorm,
    hand_centre,
    hand_fraction,
    paste_window,
    rescale_factor,
    second_pass_window,
    window_image,
)

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


def _dice(probs: torch.Tensor, image: np.ndarray) -> float:
    pred, truth = probs[0].numpy() > 0.5, image > 0
    counts = np.array([[[(pred & truth).sum(), pred.sum(), truth.sum()]]])
    return float(dice_from_counts(counts)[0, 0])


def test_rescale_factor_undoes_a_zoom_within_its_range():
    norm = ScaleNorm(reference_fraction=0.1)
    assert rescale_factor(0.1, norm) == 1.0
    assert rescale_factor(0.09, norm) == 1.0  # within the tolerance: the first pass stands
    assert rescale_factor(0.1 * 0.75 ** 2, norm) == pytest.approx(1 / 0.75)  # a hand shrunk by 0.75
    assert rescale_factor(0.1 * 1.25 ** 2, norm) == pytest.approx(0.8)
    assert rescale_factor(0.001, norm) == 1.4 and rescale_factor(0.9, norm) == 0.75  # clipped
    assert rescale_factor(0.0, norm) == 1.0  # no hand seen: nothing to scale by


@pytest.mark.parametrize("data, key", [({"reference_fraction": 0.0}, "reference_fraction"),
                                       ({"reference_fraction": 0.1, "tolerance": 1.0}, "tolerance"),
                                       ({"reference_fraction": 0.1, "max_factor": 0.9}, "min_factor"),
                                       ({"reference_fraction": 0.1, "zoom": 1}, "zoom")])
def test_bad_scale_norm_names_the_key(data, key):
    with pytest.raises(ValueError, match=key):
        ScaleNorm.from_dict(data)


def test_second_pass_window_magnified_is_around_the_hand_and_inside_the_image():
    assert second_pass_window(384, 4 / 3, (0.5, 0.5)) == (512, 64, 64)
    resized, top, left = second_pass_window(384, 4 / 3, (0.1, 0.95))
    assert (resized, top, left) == (512, 0, 128)  # clamped: the window stays inside the image
    resized, top, left = second_pass_window(384, 1.17, (0.4, 0.6))
    assert all(v % 4 == 0 for v in (resized, top, left)) and 0 <= top <= resized - 384 and 0 <= left <= resized - 384


def test_second_pass_window_shrunk_holds_the_whole_image():
    resized, top, left = second_pass_window(384, 0.8, (0.5, 0.5))
    assert resized == 308 and all(v % 4 == 0 for v in (top, left))
    assert resized - 384 <= top <= 0 and resized - 384 <= left <= 0
    with pytest.raises(ValueError, match="multiple of 4"):
        second_pass_window(383, 0.8, (0.5, 0.5))


def test_window_image_and_paste_window_are_inverse_placements():
    image = np.arange(1, 37 * 41 + 1, dtype=np.int32).reshape(37, 41)
    window = window_image(image, -8, 4, 48)  # above the image's top (black), from column 4 on
    assert window.shape == (48, 48) and (window[:8] == 0).all()
    np.testing.assert_array_equal(window[8:45, :37], image[:, 4:41])
    # logits at stride 4 of a window at (-8, 4): its cells from row 2 on land on the canvas from row 0, column 1
    canvas = torch.zeros(1, 1, 10, 12)
    logits = torch.arange(144.0).view(1, 1, 12, 12)
    paste_window(canvas, logits, -8, 4, stride=4)
    torch.testing.assert_close(canvas[..., :, 1:], logits[..., 2:12, :11])
    assert (canvas[..., 0] == 0).all()


def test_hand_fraction_and_centre():
    logits = torch.full((NUM_CLASSES, 20, 20), -1.0)
    logits[3, 2:6, 10:20] = 1.0
    assert hand_fraction(logits) == pytest.approx(40 / 400)
    assert hand_centre(logits) == pytest.approx((4 / 20, 15 / 20))
    assert hand_centre(torch.full((NUM_CLASSES, 8, 8), -1.0)) == (0.5, 0.5)


def _reference() -> ScaleNorm:
    return ScaleNorm(reference_fraction=hand_fraction(whole_image_logits(ENGINE, _hand(0.3), InferenceSettings(SPEC))))


@pytest.mark.parametrize("radius, centre", [(0.3 * 0.6, (0.5, 0.5)), (0.3 * 0.6, (0.3, 0.65)), (0.42, (0.5, 0.5))])
def test_second_pass_lands_where_the_hand_is(radius, centre):
    """A hand far from the reference size gets a second pass at another scale, whose logits are put back where
    they belong: its mask matches the hand as the first pass's does (a misplaced window would shift it)."""
    image = _hand(radius, centre)
    plain = run_model(ENGINE, image, InferenceSettings(SPEC))
    normed = run_model(ENGINE, image, InferenceSettings(SPEC, scale_norm=_reference()))
    assert normed.logits.shape[-1] != plain.logits.shape[-1]  # a second pass, on another grid
    settings = InferenceSettings(SPEC, scale_norm=_reference())
    assert _dice(predict_probs(ENGINE, image, settings), image) > 0.98
    assert _dice(predict_probs(ENGINE, image, settings), image) >= _dice(
        predict_probs(ENGINE, image, InferenceSettings(SPEC)), image) - 0.005


def test_a_hand_of_the_reference_size_is_left_alone():
    image = _hand(0.31)
    torch.testing.assert_close(predict_probs(ENGINE, image, InferenceSettings(SPEC, scale_norm=_reference())),
                               predict_probs(ENGINE, image, InferenceSettings(SPEC)), rtol=0, atol=0)


def test_flip_tta_second_pass_on_an_equivariant_engine_equals_no_tta():
    image = _hand(0.18, (0.45, 0.55))
    plain = predict_probs(ENGINE, image, InferenceSettings(SPEC, scale_norm=_reference()))
    tta = predict_probs(ENGINE, image, InferenceSettings(SPEC, scale_norm=_reference(), flip_tta=True))
    torch.testing.assert_close(tta, plain, rtol=0, atol=1e-5)


def test_a_cascades_stage1_is_normalised_too():
    cascade = Engine(fn=lambda x: _bright(x[:, :3]) + x[:, 3:4].mean() * 0, prior=ENGINE)
    spec = InputSpec(mode="tile", image_size=SIDE, tile_size=SIDE, overlap=0.25, prior=SPEC)
    image = _hand(0.18)
    plain = run_model(cascade, image, InferenceSettings(spec)).prior
    normed = run_model(cascade, image, InferenceSettings(spec, scale_norm=_reference())).prior
    assert plain.shape[-1] == SIDE // 4 and normed.shape[-1] > SIDE // 4
    assert whole_image_logits(cascade, image, InferenceSettings(spec, scale_norm=_reference())).shape == plain.shape
