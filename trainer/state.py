"""What a training run carries from step to step and saves for an exact resume (:mod:`trainer.checkpointing`):
the progress counters, how long the run is, and the state an optimiser step changes."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from trainer.ema import EMA
from trainer.losses import SegLoss
from trainer.optim import LRSchedule


@dataclass
class TrainProgress:
    """Counters saved in the resumable state (``trainer_state.json``): ``epoch`` = completed epochs, ``step`` =
    optimiser steps, ``batch_in_epoch`` = micro-batches of the current epoch already trained (for a mid-epoch
    resume), and the best validation so far (for ``best/`` and early stopping)."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_dice: float = -1.0
    best_epoch: int = 0
    bad_validations: int = 0
    last_dice: float | None = None

    def record_validation(self, mean_dice: float) -> bool:
        """Book a validation's mean Dice; True when it is the best so far (``best_epoch`` is this epoch)."""
        self.last_dice = mean_dice
        if mean_dice > self.best_dice:
            self.best_dice, self.best_epoch, self.bad_validations = mean_dice, self.epoch, 0
            return True
        self.bad_validations += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class TrainState:
    """What an optimiser step changes and a resume restores: the prepared model (a :class:`TrainModule`), the
    optimiser, the schedule, the EMA weights (when enabled) and the progress counters."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: EMA | None
    progress: TrainProgress

    def network(self, accelerator: Accelerator) -> nn.Module:
        """The Hugging Face model that is validated and saved: the EMA copy when enabled, else the live one."""
        return self.ema.module if self.ema is not None else accelerator.unwrap_model(self.model).model

    def prior(self, accelerator: Accelerator) -> nn.Module | None:
        """A cascade's stage 1 (frozen), else None."""
        return accelerator.unwrap_model(self.model).prior


@dataclass
class EpochPlan:
    """How long the run is: micro-batches per epoch (per process), epochs, optimiser steps in all; and every how
    many optimiser steps the loss and stop flags are checked (1 on the CPU, where a check costs nothing)."""

    batches: int
    epochs: int
    grad_accum_steps: int
    check_every: int = 1

    @property
    def total_steps(self) -> int:
        return self.epochs * math.ceil(self.batches / self.grad_accum_steps)


@dataclass(frozen=True)
class EpochRun:
    """How every epoch of a run trains: its length (``plan``), the loss, gradient clipping (None: off) and every
    how many optimiser steps loss, learning rate and throughput are logged."""

    plan: EpochPlan
    loss_fn: SegLoss
    clip_grad_norm: float | None = None
    log_every: int = 10
