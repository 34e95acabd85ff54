"""Per-image intensity standardisation: what each method cancels, what it ignores, and how the input spec records
it (old checkpoints without it read as before)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from evaluator.perturb import adjust_brightness, adjust_contrast, adjust_gamma, warp_image, zoom_matrix
from handseg.model.intensity import METHODS, Intensity, foreground, intensity_map, stats_histogram
from handseg.model.io import IMAGENET_MEAN, IMAGENET_STD, InputSpec, model_input, to_pixel_values
from handseg.phantom import render_hand
from handseg.runtime.config_schema import FieldError


@pytest.fixture(scope="module")
def hand() -> np.ndarray:
    return render_hand(3, size=256)[0]


def _spec(method: str, **kw) -> InputSpec:
    return InputSpec(mode="resize", image_size=256, tile_size=256, intensity=Intensity(method=method, **kw))


def _gap(a: np.ndarray, b: np.ndarray, spec: InputSpec) -> float:
    """Mean absolute difference of the network inputs of two images (in ImageNet-normalised units)."""
    return float((model_input(a, spec) - model_input(b, spec)).abs().mean())


def test_none_is_the_plain_scaling_bit_for_bit(hand):
    spec = _spec("none")
    x = model_input(hand, spec)
    gray = torch.from_numpy(hand).float() / 255
    for c in range(3):
        assert torch.equal(x[c], (gray - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    assert intensity_map(hand, spec.intensity).lut is None
    identity = np.arange(256, dtype=np.float32) / np.float32(255)  # a table that scales: the same values
    assert torch.equal(to_pixel_values(hand, IMAGENET_MEAN, IMAGENET_STD, lut=identity), x)


@pytest.mark.parametrize("change", [lambda im: adjust_gamma(im, 1.6), lambda im: adjust_gamma(im, 0.65),
                                    lambda im: adjust_brightness(adjust_contrast(im, 0.75), 20)])
def test_equalize_cancels_a_changed_look_up_table(hand, change):
    changed = change(hand)
    assert _gap(hand, changed, _spec("equalize")) < 0.25 * _gap(hand, changed, _spec("none"))


def test_percentile_and_zscore_cancel_a_linear_change(hand):
    changed = adjust_brightness(adjust_contrast(hand, 0.75), 15)
    plain = _gap(hand, changed, _spec("none"))
    assert _gap(hand, changed, _spec("percentile")) < 0.25 * plain
    assert _gap(hand, changed, _spec("zscore")) < 0.25 * plain


def test_zscore_puts_the_image_at_zero_mean_and_unit_spread(hand):
    x = model_input(hand, _spec("zscore", low=0.0, high=100.0))
    above_zero = torch.from_numpy(hand > 0)
    assert abs(float(x[1][above_zero].mean())) < 0.05 and abs(float(x[1][above_zero].std()) - 1.0) < 0.05


def test_black_fill_is_left_out_of_the_statistics(hand):
    """Zooming out adds black borders (as rotation and padding do): the table of the rest stays."""
    smaller = warp_image(hand, zoom_matrix(hand.shape, 0.7))
    assert (smaller == 0).mean() > 0.4
    for method in ("percentile", "zscore", "equalize"):
        a, b = (intensity_map(im, Intensity(method=method)).lut for im in (hand, smaller))
        assert np.abs(a - b)[1:].max() < 0.08, method
    assert stats_histogram(smaller)[0] == 0


def test_foreground_statistics_come_from_the_bright_part_alone(hand):
    """Otsu's split of the histogram (OpenCV's threshold on the same pixels): the open field and the darker soft
    tissue fall below it, so the foreground z-score sets the bright part to mean 0 and spread 1."""
    hist = stats_histogram(hand)
    fg = foreground(hist)
    otsu, _ = cv2.threshold(hand, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert np.flatnonzero(fg)[0] == int(otsu) + 1 and fg[int(otsu) + 1:].sum() == hist[int(otsu) + 1:].sum()
    x = model_input(hand, _spec("zscore", low=0.0, high=100.0, region="foreground"))[1]
    bright = torch.from_numpy(hand > otsu)
    assert abs(float(x[bright].mean())) < 0.05 and abs(float(x[bright].std()) - 1.0) < 0.05
    assert float(x[~bright].mean()) < -1.0  # darker than the hand's mean by over one of its spreads
    changed = adjust_brightness(adjust_contrast(hand, 0.8), -10)
    spec = _spec("equalize", region="foreground")
    assert _gap(hand, changed, spec) < 0.25 * _gap(hand, changed, _spec("none"))


def test_clahe_changes_the_image_and_keeps_its_shape(hand):
    fitted = intensity_map(hand, Intensity(method="clahe", clip_limit=3.0, grid=4))
    assert fitted.lut is None and fitted.image.shape == hand.shape and fitted.image.dtype == np.uint8
    assert not np.array_equal(fitted.image, hand)


def test_statistics_come_from_a_small_copy_of_a_large_image():
    image = render_hand(0, size=1024)[0]
    hist = stats_histogram(image)
    assert hist.sum() <= 512 * 512 and hist.sum() > 0.5 * 512 * 512


@pytest.mark.parametrize("region", ["image", "foreground"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_finite_inputs_also_for_a_flat_or_black_image(method, region):
    for image in (np.zeros((32, 32), np.uint8), np.full((32, 32), 77, np.uint8)):
        x = model_input(image, _spec(method, region=region))
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all()


def test_the_input_spec_records_it_and_old_records_read_as_none():
    spec = InputSpec(mode="tile", image_size=512, tile_size=512, intensity=Intensity(method="percentile", low=1.0),
                     prior=InputSpec(mode="resize", image_size=384, tile_size=384,
                                     intensity=Intensity(method="equalize")))
    data = spec.to_dict()
    assert data["intensity"]["method"] == "percentile" and data["prior"]["intensity"]["method"] == "equalize"
    assert InputSpec.from_dict(data) == spec
    old = {k: v for k, v in data.items() if k != "intensity"}
    old["prior"] = {k: v for k, v in data["prior"].items() if k != "intensity"}
    assert InputSpec.from_dict(old).intensity == Intensity() and InputSpec.from_dict(old).prior.intensity == Intensity()
    with pytest.raises(FieldError) as err:
        InputSpec.from_dict({**data, "intensity": {"method": "histogram"}})
    assert err.value.key == "intensity.method"
    with pytest.raises(FieldError) as err:
        InputSpec.from_dict({**data, "intensity": {"method": "percentile", "low": 60.0, "high": 40.0}})
    assert err.value.key == "intensity.low"
