"""Losses on hand-computed values and their behaviour on SegFormer-sized (1/4 resolution) logits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handseg.format.rasterize import pack_bits
from handseg.model.io import upsample_logits
from handseg.runtime.config_schema import from_dict
from handseg.runtime.errors import ConfigError
from trainer.labels import labels_to_float
from trainer.losses import LossConfig, LossTerm, SegLoss, bce_loss, focal_loss, soft_dice_loss


def test_bce_matches_hand_computation():
    logits = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = -(math.log(sig(0)) + math.log(1 - sig(2)) + math.log(1 - sig(-1)) + math.log(sig(3))) / 4
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_per_image_and_class():
    # Class 0 predicted perfectly (large logits), class 1 completely wrong: Dice ~1 and ~0 -> loss ~0.5.
    target = torch.zeros(1, 2, 4, 4)
    target[0, 0, :2] = 1
    target[0, 1, 2:] = 1
    logits = torch.where(target > 0, 50.0, -50.0)
    logits[0, 1] = -logits[0, 1]
    loss = soft_dice_loss(logits, target, smooth=0.0)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    # Empty target with an empty prediction is a perfect score thanks to the smoothing term.
    assert soft_dice_loss(torch.full((1, 1, 4, 4), -50.0), torch.zeros(1, 1, 4, 4), smooth=1.0).item() < 1e-6


def test_focal_reduces_to_bce_and_downweights_easy_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8) * 3
    target = (torch.rand(2, 3, 8, 8) > 0.5).float()
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(bce_loss(logits, target).item(), rel=1e-6)
    assert focal_loss(logits, target, gamma=2.0).item() < bce_loss(logits, target).item()
    easy = torch.full((1, 1, 2, 2), 6.0)
    hard = torch.full((1, 1, 2, 2), 0.1)
    one = torch.ones(1, 1, 2, 2)
    ratio_easy = focal_loss(easy, one, 2.0) / bce_loss(easy, one)
    ratio_hard = focal_loss(hard, one, 2.0) / bce_loss(hard, one)
    assert ratio_easy < 0.01 < ratio_hard


def test_logits_are_upsampled_bilinearly_to_mask_size():
    logits = torch.randn(2, 29, 16, 16)
    out = upsample_logits(logits, (64, 64))
    assert out.shape == (2, 29, 64, 64) and out.dtype == torch.float32
    assert torch.equal(out, F.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False))
    assert torch.equal(upsample_logits(logits, (16, 16)), logits)


def test_weighted_sum_and_aux_term():
    torch.manual_seed(1)
    logits = torch.randn(2, 29, 8, 8, requires_grad=True)  # 1/4 of the 32 px masks, as SegFormer gives
    aux = torch.randn(2, 29, 32, 32)
    target = (torch.rand(2, 29, 32, 32) > 0.7).float()
    cfg = LossConfig(terms=[LossTerm("bce", 0.5), LossTerm("dice", 2.0), LossTerm("focal", 1.0)], focal_gamma=2.0)
    loss_fn = SegLoss(cfg, aux_weight=0.4)
    total, parts = loss_fn(logits, target)
    up = upsample_logits(logits, (32, 32))
    expected = 0.5 * bce_loss(up, target) + 2.0 * soft_dice_loss(up, target) + focal_loss(up, target, 2.0)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(parts) == {"bce", "dice", "focal"}
    total_aux, parts_aux = loss_fn(logits, target, aux)
    aux_expected = 0.5 * bce_loss(aux, target) + 2.0 * soft_dice_loss(aux, target) + focal_loss(aux, target, 2.0)
    assert total_aux.item() == pytest.approx(expected.item() + 0.4 * aux_expected.item(), rel=1e-5)
    assert "aux" in parts_aux
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_bf16_logits_give_float32_loss():
    logits = torch.randn(1, 29, 8, 8).bfloat16()
    target = (torch.rand(1, 29, 32, 32) > 0.5).float()
    total, _ = SegLoss(LossConfig())(logits, target)
    assert total.dtype == torch.float32


def test_loss_on_unpacked_packed_labels_equals_loss_on_float_labels():
    torch.manual_seed(2)
    target = (torch.rand(2, 29, 32, 32) > 0.8).float()
    packed = np.stack([pack_bits(t.numpy().astype(np.uint8)) for t in target])  # (2, 32, 32) uint32
    labels = torch.from_numpy(packed.view(np.int32))
    assert labels.shape == (2, 32, 32) and labels.dtype == torch.int32
    unpacked = labels_to_float(labels)
    assert unpacked.shape == (2, 29, 32, 32) and unpacked.dtype == torch.float32 and torch.equal(unpacked, target)
    logits = torch.randn(2, 29, 8, 8)
    aux = torch.randn(2, 29, 32, 32)
    loss_fn = SegLoss(LossConfig(terms=[LossTerm("bce"), LossTerm("dice"), LossTerm("focal")]), aux_weight=0.4)
    got, got_parts = loss_fn(logits, unpacked, aux)
    want, want_parts = loss_fn(logits, target, aux)
    assert torch.equal(got, want) and all(torch.equal(got_parts[k], want_parts[k]) for k in want_parts)
    # Unpacked labels (float32 or uint8 loader formats) pass through as float; other shapes are refused.
    assert torch.equal(labels_to_float(target.to(torch.uint8)), target)
    with pytest.raises(ValueError, match="packed"):
        labels_to_float(torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize(
    "data, key",
    [
        ({"terms": [{"name": "tversky", "weight": 1.0}]}, "loss.terms[0].name"),
        ({"terms": [{"name": "bce", "wieght": 1.0}]}, "loss.terms[0].wieght"),
        ({"terms": []}, "loss.terms"),
        ({"terms": [{"name": "bce"}, {"name": "bce"}]}, "loss.terms"),
        ({"focal_gamma": "two"}, "loss.focal_gamma"),
    ],
)
def test_loss_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(LossConfig, data, file="train.yaml", prefix="loss")
    assert err.value.key == key


def test_loss_at_logit_resolution_uses_area_downsampled_targets():
    """resolution=logits: targets become per-cell coverage at the logits' size; mask-size loss is unchanged."""
    torch.manual_seed(0)
    logits = torch.randn(2, 29, 16, 16)
    targets = (torch.rand(2, 29, 64, 64) > 0.7).float()
    cfg = LossConfig(terms=[LossTerm("bce", 1.0), LossTerm("dice", 0.5)], resolution="logits")
    loss, parts = SegLoss(cfg)(logits, targets)
    soft = torch.nn.functional.avg_pool2d(targets, 4)  # area downsampling by an integer factor
    assert torch.allclose(parts["bce"], bce_loss(logits, soft), atol=1e-6)
    assert torch.allclose(parts["dice"], soft_dice_loss(logits, soft), atol=1e-6)
    assert torch.allclose(loss, parts["bce"] + 0.5 * parts["dice"], atol=1e-6)
    # The default still upsamples the logits to the masks.
    mask_loss, mask_parts = SegLoss(LossConfig(terms=[LossTerm("bce", 1.0)]))(logits, targets)
    up = torch.nn.functional.interpolate(logits, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(mask_parts["bce"], bce_loss(up, targets), atol=1e-6)


def test_batch_dice_sums_each_class_over_the_batch():
    """dice_mode=batch: one Dice per class over the batch; a class absent from one crop no longer scores 1."""
    logits = torch.full((2, 1, 4, 4), -20.0)  # predicts nothing anywhere
    targets = torch.zeros(2, 1, 4, 4)
    targets[0, 0, :2, :2] = 1.0  # the class is present in crop 0 only
    per_image = soft_dice_loss(logits, targets, smooth=1.0, mode="image")
    batch = soft_dice_loss(logits, targets, smooth=1.0, mode="batch")
    # per image: crop 0 scores 1/(4+1), crop 1 (absent, empty prediction) scores 1 -> loss 1 - 0.6 = 0.4
    assert per_image.item() == pytest.approx(1 - (0.2 + 1.0) / 2, abs=1e-5)
    # batch: one class, intersection 0, denominator 4 -> Dice 1/5 -> loss 0.8
    assert batch.item() == pytest.approx(0.8, abs=1e-5)
    cfg = LossConfig(terms=[LossTerm("dice", 1.0)], dice_mode="batch")
    assert SegLoss(cfg)(logits, targets)[0].item() == pytest.approx(0.8, abs=1e-5)
