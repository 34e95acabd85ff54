"""The shared inference path: MONAI agreement, original-size outputs, TTA, batching, thresholds."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from handseg.format.classes import NUM_CLASSES
from handseg.inference.engine import Engine
from handseg.inference.pipeline import predict_probs, threshold_probs
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.inference.tiling import pad_amounts, tile_windows
from handseg.model.factory import LogitsModule, build_model
from handseg.model.io import InputSpec, to_pixel_values

TILE = 128


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth blob pattern with noise, so logits vary across the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 120 + 80 * np.sin(xx / 13.0) * np.cos(yy / 17.0) + rng.normal(0, 15, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def _tile_settings(**kw) -> InferenceSettings:
    return InferenceSettings(input=InputSpec(mode="tile", image_size=256, tile_size=TILE, overlap=0.25), **kw)


def _monai(engine, image: np.ndarray, settings: InferenceSettings, mode: str = "gaussian") -> torch.Tensor:
    """MONAI's sliding window on the same black-padded, normalised image; predictor = model -> tile -> sigmoid."""
    h, w = image.shape
    (top, bottom), (left, right) = pad_amounts(h, TILE), pad_amounts(w, TILE)
    x = to_pixel_values(np.pad(image, ((top, bottom), (left, right))), settings.input.mean, settings.input.std)[None]

    def predictor(tiles):
        logits = engine(tiles)
        return torch.sigmoid(F.interpolate(logits, size=tiles.shape[-2:], mode="bilinear", align_corners=False))

    with torch.no_grad():
        out = sliding_window_inference(x, (TILE, TILE), settings.batch_size, predictor,
                                       overlap=settings.input.overlap, mode=mode)
    return out[0, :, top:top + h, left:left + w]


class _Amplified(torch.nn.Module):
    """A randomly initialised model's logits are nearly constant; scale them to a spread of a few units so
    that probabilities vary over (0, 1) and a 1e-4 agreement means something."""

    def __init__(self, module: torch.nn.Module, gain: float):
        super().__init__()
        self.module, self.gain = module, gain

    def forward(self, x):
        return self.module(x) * self.gain


@pytest.fixture(scope="module")
def engines():
    from handseg.model.presets import ModelConfig

    torch.manual_seed(0)
    out = {}
    probe = to_pixel_values(_image(128, 128, seed=1), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))[None]
    for arch in ("segformer", "upernet"):
        module = LogitsModule(build_model(ModelConfig(arch=arch, preset="test", prior_prob=None)).eval())
        with torch.no_grad():
            spread = float(module(probe).std())
        out[arch] = Engine(fn=_Amplified(module, 3.0 / spread))
    return out


@pytest.mark.parametrize("arch", ["segformer", "upernet"])
@pytest.mark.parametrize("hw", [(256, 256), (200, 176), (100, 300)])
def test_matches_monai_sliding_window(engines, arch, hw):
    engine = engines[arch]
    image = _image(*hw)
    settings = _tile_settings(batch_size=3)
    probs = predict_probs(engine, image, settings)
    ref = _monai(engine, image, settings)
    assert probs.shape == (NUM_CLASSES, *hw) and probs.dtype == torch.float32
    assert float((probs - ref).abs().max()) <= 1e-4
    assert float(probs.std()) > 0.1  # outputs that vary, so the comparison means something


def test_constant_blend_matches_monai(engines):
    image = _image(200, 176)
    settings = _tile_settings(blend="constant")
    ref = _monai(engines["segformer"], image, settings, mode="constant")
    assert float((predict_probs(engines["segformer"], image, settings) - ref).abs().max()) <= 1e-4


def test_tile_batch_size_and_a_static_batch_engine_do_not_change_results(engines):
    engine = engines["upernet"]
    image = _image(200, 176)
    one = predict_probs(engine, image, _tile_settings(batch_size=1))

    seen = []

    def static_fn(x):
        seen.append(x.shape[0])
        return engine(x)

    static = Engine(fn=static_fn, batch_size=4)  # a compiled engine's static batch: short batches are padded
    fixed = predict_probs(static, image, _tile_settings(batch_size=4))
    assert set(seen) == {4}  # 6 tiles -> batches of 4 and 2, the second padded to 4
    torch.testing.assert_close(fixed, one, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["tile", "resize"])
def test_channels_last_engine_output_gives_contiguous_probabilities(mode):
    """AOTInductor returns channels-last logits; the probabilities must come back in the plain layout, equal."""
    spec = InputSpec(mode=mode, image_size=128, tile_size=TILE, overlap=0.25)
    channels_last = Engine(fn=lambda x: _pointwise(x).contiguous(memory_format=torch.channels_last))
    image = _image(200, 176)
    probs = predict_probs(channels_last, image, InferenceSettings(input=spec))
    assert probs.is_contiguous() and probs.shape == (NUM_CLASSES, 200, 176)
    torch.testing.assert_close(probs, predict_probs(_pointwise_engine, image, InferenceSettings(input=spec)))


def _pointwise(x: torch.Tensor) -> torch.Tensor:
    """Flip-equivariant toy logits: 4x average pooling (the SegFormer stride) and a fixed 1x1 conv."""
    weight = torch.linspace(-2, 2, NUM_CLASSES * 3).view(NUM_CLASSES, 3, 1, 1)
    return F.conv2d(F.avg_pool2d(x, 4), weight)


def _position(x: torch.Tensor) -> torch.Tensor:
    """Not flip-equivariant: the logits grow from left to right within each input."""
    ramp = torch.linspace(-3, 3, x.shape[-1]).view(1, 1, 1, -1)
    return (x[:, :1] + ramp).repeat(1, NUM_CLASSES, 1, 1)


_pointwise_engine = Engine(fn=_pointwise)
_position_engine = Engine(fn=_position)


@pytest.mark.parametrize("mode", ["tile", "resize"])
def test_flip_tta_on_equivariant_engine_equals_no_tta(mode):
    image = _image(200, 176)
    spec = InputSpec(mode=mode, image_size=128, tile_size=TILE, overlap=0.25)
    plain = predict_probs(_pointwise_engine, image, InferenceSettings(input=spec))
    tta = predict_probs(_pointwise_engine, image, InferenceSettings(input=spec, flip_tta=True))
    torch.testing.assert_close(tta, plain, rtol=0, atol=1e-5)
    # ... while on an engine that is not flip-equivariant, TTA really averages two different predictions.
    plain = predict_probs(_position_engine, image, InferenceSettings(input=spec))
    tta = predict_probs(_position_engine, image, InferenceSettings(input=spec, flip_tta=True))
    assert float((tta - plain).abs().max()) > 0.1


def test_resize_mode_returns_original_size_and_follows_the_recipe(engines):
    engine = engines["segformer"]
    image = _image(300, 200)
    settings = InferenceSettings(input=InputSpec(mode="resize", image_size=128, tile_size=TILE))
    probs = predict_probs(engine, image, settings)
    assert probs.shape == (NUM_CLASSES, 300, 200) and probs.dtype == torch.float32
    small = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        logits = engine(to_pixel_values(small, settings.input.mean, settings.input.std)[None])
    assert logits.shape[-2:] == (32, 32)
    expected = torch.sigmoid(F.interpolate(logits, size=(300, 200), mode="bilinear", align_corners=False))[0]
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)


def test_tile_mode_keeps_original_size_for_large_and_small_images(engines):
    settings = _tile_settings()
    for hw in [(64, 90), (130, 260)]:
        probs = predict_probs(engines["upernet"], _image(*hw), settings)
        assert probs.shape == (NUM_CLASSES, *hw)
        assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0


def test_threshold_probs_scalar_and_per_class():
    probs = torch.full((NUM_CLASSES, 2, 2), 0.6)
    assert bool(threshold_probs(probs, 0.5).all()) and not bool(threshold_probs(probs, 0.6).any())
    per_class = [0.5] * NUM_CLASSES
    per_class[3] = 0.7
    masks = threshold_probs(probs, per_class)
    assert masks.dtype == torch.bool and not bool(masks[3].any()) and bool(masks[4].all())
    with pytest.raises(ValueError, match="thresholds"):
        threshold_probs(probs, [0.5, 0.5])


def test_float16_accumulation_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        predict_probs(_pointwise_engine, _image(64, 64), _tile_settings(accumulate_dtype="float16"))


@pytest.mark.parametrize("arch", ["segformer", "upernet"])
@pytest.mark.parametrize("mode", ["tile", "resize"])
@pytest.mark.parametrize("flip_tta", [False, True])
def test_masks_in_boxes_equal_the_thresholded_full_map(engines, arch, mode, flip_tta):
    """predict_masks never builds the full map, yet gives exactly the pixels of threshold(predict_probs): one
    threshold and 29 thresholds, an image smaller than a tile (padding), odd sizes."""
    from handseg.inference.pipeline import predict_masks

    spec = InputSpec(mode=mode, image_size=128, tile_size=TILE, overlap=0.25)
    per_class = [0.3 + 0.4 * k / (NUM_CLASSES - 1) for k in range(NUM_CLASSES)]
    for hw in [(200, 176), (100, 300)]:
        image = _image(*hw)
        settings = InferenceSettings(input=spec, batch_size=3, flip_tta=flip_tta)
        probs = predict_probs(engines[arch], image, settings)
        for thresholds in (0.5, per_class):
            masks = predict_masks(InferenceCall(engines[arch], settings, thresholds=thresholds), image)
            expected = threshold_probs(probs, thresholds)
            assert torch.equal(masks.to_dense(), expected)
            assert 0 < int(expected.sum()) < expected.numel()  # the comparison is not trivially empty or full


def test_classes_predicted_everywhere_go_through_the_full_size_blend():
    """A model that predicts every class nearly everywhere: boxes cover the image, the dense chunks take over,
    and the masks are still those of the full map."""
    from handseg.inference.pipeline import predict_masks

    image = _image(200, 176)
    engine = Engine(fn=lambda x: _position(x) + 2.0)  # high logits almost everywhere
    for mode in ("tile", "resize"):
        settings = InferenceSettings(input=InputSpec(mode=mode, image_size=128, tile_size=TILE, overlap=0.25))
        masks = predict_masks(InferenceCall(engine, settings), image)
        expected = threshold_probs(predict_probs(engine, image, settings), 0.5)
        assert float(expected.float().mean()) > 0.5 and torch.equal(masks.to_dense(), expected)


def test_postprocessing_is_applied_to_the_masks(engines):
    from handseg.inference.pipeline import predict_masks
    from handseg.inference.postprocess import PostProcessing, largest_component

    image = _image(200, 176)
    settings = _tile_settings()
    plain = predict_masks(InferenceCall(engines["upernet"], settings), image)
    keep = PostProcessing(largest_component=(True,) * NUM_CLASSES)
    kept = predict_masks(InferenceCall(engines["upernet"], settings, postprocess=keep), image).to_dense().numpy()
    dense = plain.to_dense().numpy()
    for c in range(NUM_CLASSES):
        np.testing.assert_array_equal(kept[c], largest_component(dense[c]))


@pytest.fixture(scope="module")
def cascade():
    """A cascade: a stage-1 model at 128 px whole images and a stage-2 refiner built from it (then nudged off its
    zero start, so the two parts both matter), as engines."""
    from handseg.model.factory import cascade_refiner
    from handseg.model.presets import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(arch="segformer", preset="test", prior_prob=None)
    stage1 = build_model(cfg).eval()
    with torch.no_grad():
        stage1.decode_head.classifier.bias.copy_(torch.linspace(-3, 3, NUM_CLASSES))
    refiner, _ = cascade_refiner(stage1, cfg)
    spec1 = InputSpec(mode="resize", image_size=128, tile_size=128)
    spec2 = InputSpec(mode="tile", image_size=TILE, tile_size=TILE, overlap=0.25, prior=spec1)
    return stage1, refiner.eval(), spec1, spec2


def test_a_cascade_at_its_start_predicts_what_stage1_predicts(cascade):
    from handseg.inference.engine import eager_engine

    stage1, refiner, spec1, spec2 = cascade
    image = _image(200, 176)
    first = predict_probs(eager_engine(stage1), image, InferenceSettings(input=spec1))
    both = predict_probs(eager_engine(refiner, prior=stage1), image, InferenceSettings(input=spec2))
    torch.testing.assert_close(both, first, rtol=0, atol=2e-6)  # the tiles' blend of equal values, up to rounding
    assert float(first.std()) > 0.1


@pytest.mark.parametrize("flip_tta", [False, True])
def test_cascade_masks_in_boxes_equal_the_thresholded_full_map(cascade, flip_tta):
    from handseg.inference.engine import eager_engine
    from handseg.inference.pipeline import predict_masks

    stage1, refiner, spec1, spec2 = cascade
    nudged = type(refiner)(refiner.config).eval()
    nudged.load_state_dict(refiner.state_dict())
    with torch.no_grad():  # a trained refiner's output is not zero
        nudged.decode_head.classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    engine = eager_engine(nudged, prior=stage1)
    for hw in [(200, 176), (100, 90)]:  # the second is smaller than a tile: padded, the prior outside is -20
        image = _image(*hw)
        settings = InferenceSettings(input=spec2, batch_size=3, flip_tta=flip_tta)
        probs = predict_probs(engine, image, settings)
        masks = predict_masks(InferenceCall(engine, settings), image)
        expected = threshold_probs(probs, 0.5)
        assert torch.equal(masks.to_dense(), expected) and 0 < int(expected.sum()) < expected.numel()


def test_a_standardised_cascade_sees_at_inference_what_training_feeds_it():
    """With per-image standardisation, every stage-2 tile is the window of the whole image's model input (the map
    fitted once to the whole image, as the training crops are), and the prior sees the resized image standardised
    by its own spec."""
    from handseg.model.intensity import Intensity
    from handseg.model.io import model_input

    spec1 = InputSpec(mode="resize", image_size=64, tile_size=64, intensity=Intensity(method="equalize"))
    spec2 = InputSpec(mode="tile", image_size=TILE, tile_size=TILE, overlap=0.25, prior=spec1,
                      intensity=Intensity(method="zscore"))
    seen, prior_seen = [], []

    def record(store):
        def fn(x):
            store.append(x.clone())
            return torch.zeros((x.shape[0], NUM_CLASSES, x.shape[-2] // 4, x.shape[-1] // 4))
        return fn

    image = _image(256, 200)
    predict_probs(Engine(fn=record(seen), prior=Engine(fn=record(prior_seen))), image,
                  InferenceSettings(input=spec2, batch_size=2, selection=None))  # every tile
    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)
    torch.testing.assert_close(prior_seen[0][0], model_input(small, spec1))
    whole = model_input(image, spec2)
    tiles = torch.cat(seen)[:, :3]
    windows = tile_windows(256, 200, TILE, 0.25)
    assert len(tiles) == len(windows)
    for tile, (y, x0) in zip(tiles, windows):
        torch.testing.assert_close(tile, whole[:, y:y + TILE, x0:x0 + TILE])
