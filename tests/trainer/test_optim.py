"""Schedules step by step, weight-decay groups, EMA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainer.ema import EMA
from trainer.optim import LRSchedule, OptimConfig, ScheduleConfig, build_optimizer


def _opt(lr=1.0):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    return model, build_optimizer(model, OptimConfig(lr=lr, weight_decay=0.05))


def test_norms_and_biases_get_no_weight_decay():
    model, opt = _opt()
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.ndim for p in decay["params"]] == [4]
    assert len(no_decay["params"]) == 3  # conv bias, norm weight and bias


def test_cosine_with_warmup():
    _, opt = _opt(lr=1.0)
    sched = LRSchedule(opt, ScheduleConfig(name="cosine", warmup_steps=4, min_lr_ratio=0.1), total_steps=14)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(14):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[14] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_warmup_ratio_and_constant():
    _, opt = _opt(lr=0.5)
    sched = LRSchedule(opt, ScheduleConfig(name="constant", warmup_ratio=0.25), total_steps=8)
    assert sched.warmup_steps == 2
    for _ in range(5):
        sched.step()
    assert sched.get_last_lr() == [0.5, 0.5]


def test_plateau_reduces_after_patience_and_state_round_trips():
    _, opt = _opt(lr=1.0)
    cfg = ScheduleConfig(name="plateau", plateau_patience=1, plateau_factor=0.5)
    sched = LRSchedule(opt, cfg, total_steps=10)
    for dice in (0.5, 0.6, 0.6, 0.59):
        sched.on_validation(dice)
    assert sched.get_last_lr()[0] == pytest.approx(0.5)
    _, opt2 = _opt(lr=1.0)
    other = LRSchedule(opt2, cfg, total_steps=10)
    other.load_state_dict(sched.state_dict())
    assert other.get_last_lr()[0] == pytest.approx(0.5) and other.best == pytest.approx(0.6)


def test_ema_tracks_weights():
    model = nn.Linear(2, 1)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(1.0)
    ema.module.weight.data.zero_()
    ema.module.bias.data.zero_()
    ema.update(model)  # decay min(0.5, 2/11) -> 0.1818: avg = 0.818
    assert ema.module.weight[0, 0].item() == pytest.approx(1 - 2 / 11)
    state = ema.state_dict()
    other = EMA(nn.Linear(2, 1), decay=0.9)
    other.load_state_dict(state)
    assert other.updates == 1 and torch.equal(other.module.weight, ema.module.weight)
    assert not any(p.requires_grad for p in ema.module.parameters())
