"""Exponential moving average of model weights (validated and saved instead of the raw weights when on)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from handseg.runtime.config_schema import FieldError


@dataclass
class EMAConfig:
    """``decay`` per optimiser step; the effective decay ramps up as ``min(decay, (1 + n) / (10 + n))`` so the
    average is not dominated by the random initial weights in short runs."""

    enabled: bool = False
    decay: float = 0.999

    def check(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise FieldError("decay", f"must be in (0, 1), got {self.decay}")


class EMA:
    """Holds a frozen copy of ``model`` whose floating-point parameters and buffers track the live ones.

    ``state_dict`` / ``load_state_dict`` make it part of the resumable state (:mod:`trainer.checkpointing`).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Call after each optimiser step with the unwrapped live model."""
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        live = model.state_dict()
        for name, avg in self.module.state_dict().items():
            src = live[name].detach()
            if avg.dtype.is_floating_point:
                avg.lerp_(src.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(src)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
        self.module.load_state_dict(state["weights"])
