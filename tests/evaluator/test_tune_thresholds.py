"""Threshold search from probability histograms: exact Dice at every grid threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator import thresholds as tune


def test_histogram_dice_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(29, 40, 40, generator=g)
    gt = (torch.rand(29, 40, 40, generator=g) < 0.3).to(torch.uint8)
    bins = 20
    dice = tune.dice_per_threshold(tune.histograms(probs, gt, bins)[None])[0]
    for k in (1, 7, 10, 19):
        pred = (probs * bins).long() >= k
        inter = (pred & gt.bool()).sum((1, 2)).numpy()
        ref = (2 * inter + 1e-4) / (pred.sum((1, 2)).numpy() + gt.sum((1, 2)).numpy() + 1e-4)
        np.testing.assert_allclose(dice[:, k - 1], ref, rtol=0, atol=1e-12)


def test_best_threshold_finds_the_separating_value():
    # Class 0: ground truth exactly where p >= 0.7 -> Dice 1 at 0.7; every other class empty everywhere.
    probs = torch.linspace(0, 0.999, 100 * 100).reshape(1, 100, 100).repeat(29, 1, 1)
    gt = torch.zeros_like(probs, dtype=torch.uint8)
    gt[0] = probs[0] >= 0.7
    thresholds, tuned, at_default = tune.best_thresholds(tune.histograms(probs, gt, 10)[None])
    assert thresholds[0] == 0.7 and tuned[0] == 1.0 and at_default[0] < 1.0
    assert tuned.min() >= at_default.min()


def test_tuning_stores_the_hand_reference_of_the_first_pass(phantom_root):
    """The thresholds file's ``hand_norm`` is the mean fraction of the image the whole-image pass calls hand, on
    the validation images (here: a toy engine that calls the bright pixels hand); a model that sees no hand
    stores none."""
    from types import SimpleNamespace

    import cv2
    import torch.nn.functional as F

    from handseg.data.dataset_index import index_split
    from handseg.data.image_io import read_image
    from handseg.inference.engine import Engine
    from handseg.inference.settings import InferenceSettings
    from handseg.model.io import InputSpec

    samples = index_split(phantom_root, "train")[:3]
    settings = InferenceSettings(InputSpec(mode="resize", image_size=64, tile_size=64))
    toy = SimpleNamespace(folder="toy")
    bright = Engine(fn=lambda x: (4 * F.avg_pool2d(x[:, :1], 4) - 1).repeat(1, 29, 1, 1))
    cfg = SimpleNamespace(device="cpu", tile_selection=True)
    result = tune.tune(cfg, [(bright, settings, toy)], samples, bins=10, progress=False)
    expected = np.mean([(cv2.resize(read_image(s.image_path), (64, 64), interpolation=cv2.INTER_AREA)
                         .reshape(16, 4, 16, 4).mean((1, 3)) > 255 * (0.485 + 0.229 / 4)).mean() for s in samples])
    assert 0.05 < expected < 0.95
    assert result["hand_norm"]["reference_fraction"] == np.round(expected, 6)
    assert result["hand_norm"]["reference_angle"] is None  # every class alike: no carpal-to-finger axis
    blind = Engine(fn=lambda x: torch.full((x.shape[0], 29, 16, 16), -5.0))
    assert tune.tune(SimpleNamespace(device="cpu", tile_selection=True), [(blind, settings, toy)], samples, bins=10,
                     progress=False)["hand_norm"] is None


def test_the_reference_angle_is_the_hands_mean_axis_and_the_spread_their_largest_deviation(tmp_path):
    """Hands turned 80, 95 and 105 degrees (fingers up at 90): reference 93.3, spread 13.3."""
    from types import SimpleNamespace

    import cv2

    from handseg.inference.engine import Engine
    from handseg.inference.settings import InferenceSettings
    from handseg.model.io import InputSpec
    from tests.handseg.synthetic import pointing_hand, two_level_logits

    samples = []
    for k, degrees in enumerate((80.0, 95.0, 105.0)):
        cv2.imwrite(str(tmp_path / f"{k}.png"), pointing_hand(degrees - 90.0))
        samples.append(SimpleNamespace(image_path=tmp_path / f"{k}.png"))
    settings = InferenceSettings(InputSpec(mode="resize", image_size=256, tile_size=256))
    members = [(Engine(fn=two_level_logits), settings, SimpleNamespace(folder="toy"))]
    reference = tune.hand_reference(tune.Tuning(samples, members, "cpu", progress=False))
    assert reference.reference_angle == pytest.approx(280.0 / 3, abs=1.0)
    assert reference.angle_spread == pytest.approx(280.0 / 3 - 80.0, abs=1.0)


def test_the_tile_selection_margin_is_the_smallest_that_scores_as_every_tile(phantom_root):
    """A toy cascade (stage 1 calls the bright pixels bone, stage 2 adds a residual everywhere) on validation
    images: each margin's Dice and tiles run are reported; the margin chosen is the smallest within the tolerances,
    and larger margins run more tiles."""
    import torch.nn.functional as F

    from handseg.data.dataset_index import index_split
    from handseg.inference.engine import Engine
    from handseg.inference.settings import InferenceSettings
    from handseg.inference.tile_selection import MARGINS, TileSelection
    from handseg.model.io import InputSpec

    samples = index_split(phantom_root, "train")[:2]
    spec1 = InputSpec(mode="resize", image_size=64, tile_size=64)
    spec2 = InputSpec(mode="tile", image_size=64, tile_size=64, overlap=0.25, prior=spec1)
    stage1 = Engine(fn=lambda x: (6 * F.avg_pool2d(x[:, :1], 4) - 2).repeat(1, 29, 1, 1))
    stage2 = Engine(fn=lambda x: F.avg_pool2d(x[:, 3:] * 2.0 - x[:, :1] * 0.5, 4), prior=stage1)
    members = [(stage2, InferenceSettings(spec2, selection=TileSelection()), None)]
    found = tune.choose_selection(tune.Tuning(samples, members, "cpu", progress=False), [0.5] * 29, None)
    rows = found["margins"]
    assert list(rows) == list(MARGINS) and found["selection"]["probability"] == 0.5
    runs = [rows[m]["tiles_run"] for m in MARGINS]
    assert runs == sorted(runs) and runs[0] < 1.0
    ok = [found["every_tile_mean_dice"] - rows[m]["mean_dice"] <= tune.SELECTION_MEAN_DROP + 1e-6
          and rows[m]["largest_class_drop"] <= tune.SELECTION_CLASS_DROP + 1e-6 for m in MARGINS]
    chosen = found["selection"]["margin"]
    assert ok[MARGINS.index(chosen)] and not any(ok[:MARGINS.index(chosen)])
    assert tune.choose_selection(tune.Tuning(samples, [(stage1, InferenceSettings(spec1), None)], "cpu"), 0.5,
                                 None) is None


def test_one_checkpoint_runs_once_per_image_and_tunes_as_four_passes_do(phantom_root, tmp_path):
    """With one checkpoint the stored outputs (every tile, run once per image) give the thresholds file that the
    four passes of the soft-vote path (each running the cascade again) give, to the last digit; stage 2 runs on
    each image's every tile once, stage 1 once per image."""
    from types import SimpleNamespace

    import torch.nn.functional as F

    from handseg.data.dataset_index import index_split
    from handseg.inference.engine import Engine
    from handseg.inference.settings import InferenceSettings
    from handseg.inference.tile_selection import TileSelection
    from handseg.model.io import InputSpec

    samples = index_split(phantom_root, "train")[:2]
    spec1 = InputSpec(mode="resize", image_size=64, tile_size=64)
    spec2 = InputSpec(mode="tile", image_size=64, tile_size=64, overlap=0.25, prior=spec1)
    calls = {"stage1": 0, "stage2": 0}

    def counted(name, fn):
        def run(x):
            calls[name] += x.shape[0]
            return fn(x)
        return run

    stage1 = Engine(fn=counted("stage1", lambda x: (6 * F.avg_pool2d(x[:, :1], 4) - 2).repeat(1, 29, 1, 1)))
    stage2 = Engine(fn=counted("stage2", lambda x: F.avg_pool2d(x[:, 3:] * 2.0 - x[:, :1] * 0.5, 4)), prior=stage1)
    member = (stage2, InferenceSettings(spec2, selection=TileSelection()), SimpleNamespace(folder="toy"))
    cfg = SimpleNamespace(device="cpu", tile_selection=True)
    stored = tune.tune(cfg, [member], samples, bins=20, progress=False)
    store = tune.OutputStore(member, "cpu", tmp_path)
    tiles = sum(len(store.outputs(s).windows) for s in samples)
    assert calls == {"stage1": 2 * len(samples), "stage2": 2 * tiles}  # the tune, then the count just above
    # The same member twice is a soft vote of two equal models: the four-pass path, same probabilities.
    voted = tune.tune(cfg, [member, member], samples, bins=20, progress=False)
    voted["members"] = stored["members"]
    assert voted == stored


@pytest.mark.parametrize("selection", [True, False])
@pytest.mark.parametrize("bins", [10, 100])
def test_box_histograms_equal_the_histograms_of_the_dense_probabilities(selection, bins):
    """A toy cascade (tiles skipped or all run) on a toy hand: the per-class-box counts equal the counts of the full
    (29, H, W) probabilities, for classes whose first-bin box covers most of the image (blended at full size) and
    classes whose box holds only the hand (stage 1's logits lowered by 5). The box blend matches the dense one to
    float rounding (a few 1e-7), so a pixel on a bin edge may count one bin over: at most two of 40000 here."""
    from dataclasses import replace

    from handseg.inference.box_blend import candidate_boxes, float32_thresholds
    from handseg.inference.pipeline import dense_probs, run_model
    from tests.handseg.inference.test_tile_selection import _engine, _hand, _settings

    image = _hand(200, 230)
    settings = _settings() if selection else replace(_settings(), selection=None)
    out = run_model(_engine(), image, settings)
    assert (out.rows is not None) == selection
    prior = out.prior.clone()
    prior[15:] -= 5.0
    out = replace(out, prior=prior)
    probs = dense_probs(out)
    gt = (probs > 0.4).to(torch.uint8)
    gt[:, 50:90, 60:120] ^= 1  # some truth the model misses, some it predicts wrongly
    got, want = tune.box_histograms(out, gt, bins), tune.histograms(probs, gt, bins)
    np.testing.assert_array_equal(got.sum(-1), want.sum(-1))  # every pixel counted once, truth included
    assert np.abs(got - want).sum() <= 4 and np.abs(np.cumsum(got - want, -1)).max() <= 2  # neighbouring bins only
    assert (got[:, 0, 1:] > 0).any() and (got[:, 1, 1:] > 0).any()
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in candidate_boxes(out, float32_thresholds(1.0 / bins, 29))]
    assert max(areas) * 4 > image.size > min(areas) * 4  # both blending paths ran
