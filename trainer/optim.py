"""Optimiser and learning-rate schedules: AdamW; cosine with warmup, reduce-on-plateau, constant.

The schedule is one small object stepped once per optimiser step (not per micro-batch and not once per
process), with an ``on_validation(mean_dice)`` hook for reduce-on-plateau. It has ``state_dict`` /
``load_state_dict`` so the resumable state (:mod:`trainer.checkpointing`) saves and restores it for exact resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from handseg.runtime.config_schema import FieldError


@dataclass
class OptimConfig:
    """AdamW settings. Norm weights and biases get no weight decay."""

    name: Literal["adamw"] = "adamw"
    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def check(self) -> None:
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise FieldError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise FieldError("betas", f"must be in [0, 1), got {list(self.betas)}")


@dataclass
class ScheduleConfig:
    """``cosine``: linear warmup then cosine decay to ``min_lr_ratio`` x lr at the last step;
    ``plateau``: warmup then multiply the lr by ``plateau_factor`` after ``plateau_patience`` validations
    without a mean-Dice gain; ``constant``: warmup then flat. Give ``warmup_steps`` or ``warmup_ratio``
    (fraction of all optimiser steps), not both."""

    name: Literal["cosine", "plateau", "constant"] = "cosine"
    warmup_steps: int | None = None
    warmup_ratio: float | None = None
    min_lr_ratio: float = 0.0
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    plateau_min_delta: float = 1e-4

    def check(self) -> None:
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise FieldError("warmup_steps", "give warmup_steps or warmup_ratio, not both")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise FieldError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise FieldError("warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise FieldError("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        if not 0.0 < self.plateau_factor < 1.0:
            raise FieldError("plateau_factor", f"must be in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0:
            raise FieldError("plateau_patience", f"must be >= 0, got {self.plateau_patience}")


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; 1-D tensors (norms, biases) are excluded from weight decay."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


class LRSchedule:
    """Sets ``lr = base_lr x warmup(step) x decay(step) x plateau_scale`` on every parameter group."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = max(1, int(total_steps))
        if cfg.warmup_steps is not None:
            self.warmup_steps = cfg.warmup_steps
        else:
            self.warmup_steps = int(round((cfg.warmup_ratio or 0.0) * self.total_steps))
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.step_count = 0
        self.plateau_scale = 1.0
        self.best: float | None = None
        self.bad_validations = 0
        self._apply()

    def factor(self, step: int) -> float:
        """Multiplier of the base lr at optimiser step ``step`` (0-based), before the plateau scale."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.cfg.name != "cosine":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.cfg.min_lr_ratio
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        scale = self.factor(self.step_count) * self.plateau_scale
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def step(self) -> None:
        """Advance one optimiser step."""
        self.step_count += 1
        self._apply()

    def on_validation(self, metric: float) -> None:
        """Reduce-on-plateau bookkeeping (higher ``metric`` is better); a no-op for the other schedules."""
        if self.cfg.name != "plateau":
            return
        if self.best is None or metric > self.best + self.cfg.plateau_min_delta:
            self.best = metric
            self.bad_validations = 0
            return
        self.bad_validations += 1
        if self.bad_validations > self.cfg.plateau_patience:
            self.plateau_scale *= self.cfg.plateau_factor
            self.bad_validations = 0
            self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "best": self.best,
            "bad_validations": self.bad_validations,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
        self._apply()
