"""Wall time per named phase of the inference path (decode, preprocess, engine, blend, threshold + RLE).

The inference functions take an optional :class:`PhaseTimer`; without one they time nothing. On CUDA the device
is synchronised at each phase edge, so a phase's time is its own work, not whatever was queued before it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch


class PhaseTimer:
    """Accumulates seconds per phase name over any number of calls: ``with timer.phase("engine"): ...``."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def phase(timer: PhaseTimer | None, name: str):
    """``timer.phase(name)``, or a context that does nothing when there is no timer."""
    return timer.phase(name) if timer is not None else contextlib.nullcontext()
