"""A cascade's stage 2 only near the bones stage 1 finds: which tiles run, the blend at the edge of the selected
region, stage 1's output where no tile runs, the every-tile option, hand normalisation first, no padded batch."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handseg.format.classes import NUM_CLASSES
from handseg.inference.box_blend import blend_box, prior_region
from handseg.inference.engine import Engine
from handseg.inference.hand_norm import HandNorm, warp_image
from handseg.inference.pipeline import (
    dense_probs,
    normalised_outputs,
    predict_masks,
    predict_probs,
    run_model,
    threshold_probs,
    whole_image_logits,
)
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.inference.tile_selection import TileSelection, selected_tiles, uncovered_rects
from handseg.inference.tiling import pad_amounts, tile_windows
from handseg.model.io import InputSpec, logits_in_window, to_pixel_values

TILE = 64
SPEC1 = InputSpec(mode="resize", image_size=128, tile_size=128)
SPEC2 = InputSpec(mode="tile", image_size=TILE, tile_size=TILE, overlap=0.25, prior=SPEC1)
OFFSETS = torch.linspace(-2.0, -0.5, NUM_CLASSES).view(1, -1, 1, 1)


def _stage1(x: torch.Tensor) -> torch.Tensor:
    """Toy stage 1: bright pixels are bone. (B, 3, 128, 128) -> (B, 29, 32, 32): the gray level, pooled 4x."""
    return F.avg_pool2d(x[:, :1], 4) * 3.0 + OFFSETS


def _stage2(x: torch.Tensor) -> torch.Tensor:
    """Toy stage 2's residual, from the image and the prior channels: (B, 32, 64, 64) -> (B, 29, 16, 16). Only
    elementwise arithmetic and pooling, so a tile's output does not depend on the batch it runs in."""
    mixed = x[:, 3:] * torch.linspace(-1.5, 1.5, NUM_CLASSES).view(1, -1, 1, 1) + x[:, :1] * 0.4 - 0.3
    return F.avg_pool2d(mixed, 4)


def _engine(**kw) -> Engine:
    return Engine(fn=_stage2, prior=Engine(fn=_stage1), **kw)


def _hand(h: int = 256, w: int = 256, centre=(120, 100), radius=(60, 40)) -> np.ndarray:
    """A dark image with one bright ellipse (the "hand") and some noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - centre[0]) / radius[0]) ** 2 + ((xx - centre[1]) / radius[1]) ** 2 <= 1.0
    img = np.where(inside, 200.0, 90.0) + rng.normal(0, 8, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def _settings(margin: int = 8, **kw) -> InferenceSettings:
    return InferenceSettings(input=SPEC2, batch_size=3, selection=TileSelection(0.5, margin), **kw)


def _coverage(windows, run, padded_hw, pad, image_hw) -> torch.Tensor:
    """(H, W) bool: the image pixels some run tile covers."""
    cover = torch.zeros(padded_hw, dtype=torch.bool)
    for n in run:
        y, x = windows[n]
        cover[y:y + TILE, x:x + TILE] = True
    (top, left), (h, w) = pad, image_hw
    return cover[top:top + h, left:left + w]


@pytest.mark.parametrize("margin", [0, 5, 20])
@pytest.mark.parametrize("hw", [(256, 200), (50, 150)])
def test_selected_tiles_are_those_within_the_margin_of_a_bone_cell(margin, hw):
    """Against a pixel-level reference: the footprints of the cells above the probability, dilated by a square of
    ``margin`` pixels, meet exactly the tiles chosen (an image smaller than a tile is padded)."""
    h, w = hw
    gen = torch.Generator().manual_seed(margin)
    prior = torch.randn(NUM_CLASSES, 12, 10, generator=gen) * 2 - 6
    prior[3, 2, 7] = prior[8, 9, 1] = 1.0  # two bone cells
    (top, bottom), (left, right) = pad_amounts(h, TILE), pad_amounts(w, TILE)
    windows = tile_windows(h + top + bottom, w + left + right, TILE, 0.25)
    chosen = selected_tiles(prior, (h, w), (top, left), windows, (TILE, TILE), TileSelection(0.5, margin))
    cells = (torch.sigmoid(prior).amax(0) > 0.5).float()
    rows = torch.div(torch.arange(h) * 12, h, rounding_mode="floor")  # the cell each pixel's footprint is in
    cols = torch.div(torch.arange(w) * 10, w, rounding_mode="floor")
    bone = cells[rows][:, cols][None, None]
    if margin:
        bone = F.max_pool2d(F.pad(bone, (margin,) * 4), 2 * margin + 1, stride=1)
    bone = F.pad(bone[0, 0], (left, right, top, bottom)).bool()
    expected = [n for n, (y, x) in enumerate(windows) if bool(bone[y:y + TILE, x:x + TILE].any())]
    assert chosen == expected
    assert 0 < len(chosen) < len(windows) if h > TILE else len(chosen) > 0


def test_uncovered_rects_are_the_pixels_no_run_tile_covers():
    windows = tile_windows(256, 200, TILE, 0.25)
    ran = [n % 3 == 0 or n == 7 for n in range(len(windows))]
    cover = _coverage(windows, [n for n, r in enumerate(ran) if r], (256, 200), (0, 0), (256, 200))
    marked = torch.zeros(256, 200, dtype=torch.int32)
    for y0, x0, y1, x1 in uncovered_rects(windows, ran, (TILE, TILE)):
        marked[y0:y1, x0:x1] += 1
    assert int(marked.max()) == 1 and torch.equal(marked.bool(), ~cover) and bool((~cover).any())


@pytest.mark.parametrize("flip_tta", [False, True])
def test_the_blend_at_the_edge_equals_every_tile_with_skipped_residuals_zeroed(flip_tta):
    """The reference runs every tile, then sets stage 2's residual of the skipped tiles to zero: where a run tile
    covers the image, the selection's probabilities are that reference's bit for bit (a skipped tile blends in
    stage 1's value, with its Gaussian weight); elsewhere they are stage 1's (to float rounding)."""
    engine, image = _engine(), _hand()
    settings = _settings(flip_tta=flip_tta)
    out = run_model(engine, image, settings)
    run = [n for n in range(len(out.windows)) if out.row(n) is not None]
    assert 0 < len(run) < len(out.windows) and len(out.logits) == len(run)
    every = run_model(engine, image, replace(settings, selection=None))
    zeroed = every.logits.clone()
    skipped = [n for n in range(len(out.windows)) if n not in run]
    zeroed[skipped] = 0.0
    flipped = None if every.flipped is None else every.flipped.clone()
    if flipped is not None:
        flipped[skipped] = 0.0
    reference = dense_probs(replace(every, logits=zeroed, flipped=flipped))
    probs = predict_probs(engine, image, settings)
    cover = _coverage(out.windows, run, out.padded_hw, out.pad, out.image_hw)
    edge = cover & _coverage(out.windows, skipped, out.padded_hw, out.pad, out.image_hw)  # run and skipped tiles
    assert bool(edge.any()) and bool((~cover).any())
    assert torch.equal(probs[:, cover], reference[:, cover])
    assert float((probs - reference).abs().max()) <= 1e-6
    # The skipped tiles matter at the edge: ignoring them (or running them) would give other probabilities.
    assert float((dense_probs(every) - reference)[:, edge].abs().max()) > 1e-3
    for y0, x0, y1, x1 in [(0, 0, 256, 256), (40, 30, 150, 140)]:  # the per-class box path, to float rounding
        for c in (0, 14, 28):
            box = blend_box(out, c, (y0, x0, y1, x1))[1]
            assert float((box - reference[c, y0:y1, x0:x1]).abs().max()) <= 1e-6
    masks = predict_masks(InferenceCall(engine, settings), image).to_dense()
    assert torch.equal(masks, threshold_probs(probs, 0.5))
    assert torch.equal(masks[:, cover], threshold_probs(reference, 0.5)[:, cover]) and bool(masks.any())


def test_masks_where_no_tile_runs_are_stage1s_thresholded_output():
    """Thresholds below the selection's probability: stage 1 predicts some classes in the skipped tiles, and there
    the masks are its own, ``sigmoid(stage-1 logits upsampled) > threshold``, exactly."""
    engine, image = _engine(), _hand()
    settings = _settings()
    thresholds = [0.15 - 0.004 * c for c in range(NUM_CLASSES)]
    out = run_model(engine, image, settings)
    run = [n for n in range(len(out.windows)) if out.row(n) is not None]
    cover = _coverage(out.windows, run, out.padded_hw, out.pad, out.image_hw)
    first = whole_image_logits(engine, image, settings)
    stage1 = threshold_probs(torch.sigmoid(logits_in_window(first, image.shape, (0, 0, *image.shape))), thresholds)
    masks = predict_masks(InferenceCall(engine, settings, thresholds=thresholds), image).to_dense()
    assert torch.equal(masks[:, ~cover], stage1[:, ~cover])
    probs = torch.sigmoid(logits_in_window(first, image.shape, (0, 0, *image.shape)))
    for c in (0, 28):  # the probabilities themselves, not a blend of equal values that rounds differently
        assert torch.equal(blend_box(out, c, (0, 0, *image.shape))[1][~cover], probs[c][~cover])
    assert 0 < int(stage1[:, ~cover].sum()) < stage1[:, ~cover].numel()  # not trivially empty or full
    assert not torch.equal(masks[:, cover], stage1[:, cover])  # stage 2 changes something where it runs


def _todays_tiles(image: np.ndarray, engine: Engine, batch: int) -> torch.Tensor:
    """The tiles' logits as the path before the selection made them: the whole padded image normalised at once and
    sliced, stage 1's probabilities resampled over each tile, every tile through the engine in batches."""
    (top, bottom), (left, right) = pad_amounts(image.shape[0], TILE), pad_amounts(image.shape[1], TILE)
    padded = np.pad(image, ((top, bottom), (left, right)))
    x = to_pixel_values(padded, SPEC2.mean, SPEC2.std)
    first = whole_image_logits(engine, image, InferenceSettings(input=SPEC2))
    probs = torch.sigmoid(first)
    tiles = [torch.cat([x[:, y:y + TILE, x0:x0 + TILE],
                        prior_region(probs, image.shape, (top, left), (y, x0, y + TILE, x0 + TILE), 0.0)])
             for y, x0 in tile_windows(*padded.shape, TILE, 0.25)]
    return torch.cat([engine(torch.stack(tiles[s:s + batch])) for s in range(0, len(tiles), batch)])


@pytest.mark.parametrize("hw", [(256, 256), (50, 90)])
def test_the_every_tile_option_is_the_path_before_bit_for_bit(hw):
    engine, image = _engine(), _hand(*hw, centre=(hw[0] // 2, hw[1] // 2), radius=(hw[0] // 4, hw[1] // 4))
    settings = _settings(margin=0)
    every = run_model(engine, image, replace(settings, selection=None))
    assert every.rows is None and every.uncovered == []
    assert torch.equal(every.logits, _todays_tiles(image, engine, settings.batch_size))
    masks = predict_masks(InferenceCall(engine, replace(settings, selection=None)), image).to_dense()
    assert torch.equal(masks, threshold_probs(dense_probs(every), 0.5))
    if hw == (256, 256):  # the option matters: the selection at margin 0 skips tiles whose stage 2 changes pixels
        assert not torch.equal(predict_masks(InferenceCall(engine, settings), image).to_dense(), masks)


def test_hand_normalisation_comes_before_the_selection():
    """A hand far smaller than the reference is magnified first; the tiles stage 2 runs on are those stage 1 finds
    bone near in the magnified image, not in the original."""
    engine, image = _engine(), _hand(centre=(128, 128), radius=(30, 20))
    settings = replace(_settings(margin=0), hand_norm=HandNorm(reference_fraction=0.2))
    out, matrix = normalised_outputs(engine, image, settings, "cpu", None)
    assert matrix is not None
    warped = warp_image(image, matrix)
    first = whole_image_logits(engine, warped, settings)
    expected = selected_tiles(first, warped.shape, out.pad, out.windows, (TILE, TILE), settings.selection)
    original = selected_tiles(whole_image_logits(engine, image, settings), image.shape, out.pad, out.windows,
                              (TILE, TILE), settings.selection)
    run = [n for n in range(len(out.windows)) if out.row(n) is not None]
    assert run == expected and len(expected) > len(original)


def test_a_static_batch_engine_with_a_tail_pads_no_tile():
    """Stage 2 on a static batch of 4 with a batch-1 tail: every call is full of real tiles (none all zero)."""
    calls = []

    def static(x):
        calls.append(x.clone())
        return _stage2(x)

    engine = Engine(fn=static, batch_size=4, prior=Engine(fn=_stage1),
                    tail=Engine(fn=static, batch_size=1))
    image = _hand()
    settings = replace(_settings(), batch_size=4)
    out = run_model(engine, image, settings)
    assert len(out.logits) % 4 != 0  # a remainder to run
    assert [len(c) for c in calls] == [4] * (len(out.logits) // 4) + [1] * (len(out.logits) % 4)
    assert all(bool(t.abs().amax() > 0) for c in calls for t in c)
    padded = Engine(fn=static, batch_size=4, prior=Engine(fn=_stage1))
    calls.clear()
    torch.testing.assert_close(run_model(padded, image, settings).logits, out.logits, rtol=0, atol=0)
    assert any(bool(t.abs().amax() == 0) for c in calls for t in c)  # without a tail, zeros fill the last batch


def test_no_bone_anywhere_runs_no_tile_and_predicts_stage1():
    engine = _engine()
    image = np.full((256, 256), 10, dtype=np.uint8)
    settings = _settings()
    out = run_model(engine, image, settings)
    assert len(out.logits) == 0 and all(out.row(n) is None for n in range(len(out.windows)))
    probs = predict_probs(engine, image, settings)
    first = whole_image_logits(engine, image, settings)
    torch.testing.assert_close(probs, torch.sigmoid(logits_in_window(first, (256, 256), (0, 0, 256, 256))),
                               rtol=0, atol=0)
    assert predict_masks(InferenceCall(engine, settings), image).to_dense().sum() == 0
    assert math.isclose(float(probs.max()), float(torch.sigmoid(first).max()), rel_tol=1e-3)
