"""QC inside the inference pass: the same masks as predict_masks, uncertain pixels counted in the boxes, stage 1
against the cascade, flip TTA; on a tiny cascade and a phantom hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from evaluator.qc.assess import QualityControl, predict_with_qc
from evaluator.qc.probes import UncertainCounter, flip_agreement, stage_agreement
from handseg.format.classes import CLASSES
from handseg.inference.engine import eager_engine
from handseg.inference.hand_norm import HandNorm, hand_fraction
from handseg.inference.pipeline import (
    masks_from_outputs,
    normalised_outputs,
    predict_masks,
    run_model,
    whole_image_logits,
)
from handseg.inference.postprocess import PostProcessing
from handseg.inference.settings import InferenceCall, inference_settings
from handseg.model.checkpoint import load_checkpoint
from handseg.phantom import render_hand
from tests.evaluator.conftest import make_cascade

T = [0.5] * len(CLASSES)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    ckpt = load_checkpoint(make_cascade(tmp_path_factory.mktemp("qc") / "cascade" / "best"))
    return ckpt, eager_engine(ckpt.model, "fp32", "cpu", prior=ckpt.prior.model)


@pytest.fixture(scope="module")
def image():
    return render_hand(7, 160, "R")[0]


def _same(a, b) -> bool:
    return a.boxes == b.boxes and all(x is None or torch.equal(x, y) for x, y in zip(a.masks, b.masks))


@pytest.mark.parametrize("tta", [False, True])
def test_qc_gives_the_masks_predict_masks_gives(cascade, image, tta):
    ckpt, engine = cascade
    settings = inference_settings(ckpt.spec, engine, batch_size=2, flip_tta=tta)
    post = PostProcessing(tuple(c % 2 == 0 for c in range(29)), tuple(c % 3 == 0 for c in range(29)))
    call = InferenceCall(engine, settings, "cpu", T, post)
    masks, result = predict_with_qc(call, image, QualityControl())
    assert _same(masks, predict_masks(InferenceCall(engine, settings, "cpu", T, post), image))
    stage = result.signals.feature("stage_disagreement")
    flip = result.signals.feature("flip_disagreement")
    present = result.signals.present
    assert present.any() and (np.isfinite(stage[present])).all() and (stage[present] >= 0).all()
    assert np.isfinite(flip[present]).all() == tta
    assert result.predicted_dice is None and result.flag == bool(result.findings)


def test_qc_gives_the_masks_predict_masks_gives_with_hand_normalisation(cascade, image):
    ckpt, engine = cascade
    settings = inference_settings(ckpt.spec, engine, batch_size=2)
    fraction = hand_fraction(whole_image_logits(engine, image, settings))  # a random model: much of the image
    settings = replace(settings, hand_norm=HandNorm(reference_fraction=0.4 * fraction))  # shrunk by 0.75
    assert normalised_outputs(engine, image, settings, "cpu", None)[1] is not None
    masks, result = predict_with_qc(InferenceCall(engine, settings, "cpu", T), image, QualityControl())
    assert _same(masks, predict_masks(InferenceCall(engine, settings, "cpu", T), image))
    assert (masks.height, masks.width) == image.shape and result.signals.present.any()


def test_uncertain_counter_counts_pixels_near_the_threshold():
    counter = UncertainCounter([0.5, 0.9])
    probs = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95]).repeat_interleave(2).repeat(4, 1)  # (4, 10), pairs of columns
    counter(0, (0, 0, 4, 10), probs)  # logit(0.5) +- 1.5: (0.18, 0.82)
    counter(1, (0, 0, 4, 10), probs)  # logit(0.9) +- 1.5: (0.67, 0.98)
    assert counter.counts.tolist() == [24, 16]  # every second row and column, each standing for four pixels


def test_stage_agreement_compares_stage_one_with_the_cascade(cascade, image):
    ckpt, engine = cascade
    settings = inference_settings(ckpt.spec, engine, batch_size=2)
    out = run_model(engine, image, settings)
    masks = masks_from_outputs(out, T)
    dice = stage_agreement(out, masks, T)
    assert dice.shape == (29,) and ((0 <= dice) & (dice <= 1)).all()
    silent = stage_agreement(replace(out, prior=torch.full_like(out.prior, -30.0)), masks, T)
    areas = masks.areas()
    assert np.allclose(silent[areas == 0], 1.0) and (silent[areas > 20] < 0.01).all()
    assert stage_agreement(replace(out, prior=None), masks, T) is None


def test_flip_agreement_is_one_for_a_mirror_symmetric_model(cascade, image):
    ckpt, engine = cascade
    out = run_model(engine, image, inference_settings(ckpt.spec, engine, batch_size=2, flip_tta=True))
    assert flip_agreement(replace(out, flipped=None), T) is None
    symmetric = replace(out, flipped=out.logits.flip(-1))  # tile mode flips back after upsampling
    assert np.allclose(flip_agreement(symmetric, T), 1.0)
    real = flip_agreement(out, T)
    assert ((0 <= real) & (real <= 1)).all()
