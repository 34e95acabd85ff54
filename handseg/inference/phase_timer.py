"""Wall time per named phase of the inference path (decode, preprocess, stage1, stage2, blend, threshold + RLE).

The inference functions take an optional :class:`PhaseTimer`; without one they time nothing. On CUDA the device
is synchronised at each phase edge, so a phase's time is its own work, not whatever was queued before it. The
model's phases: ``stage1``, the whole-image pass (a resize-mode model, or a cascade's stage 1); ``stage2``, the
tiles (a tile-mode model, or a cascade's stage 2).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch


class PhaseTimer:
    """Accumulates seconds per phase name over any number of calls: ``with timer.phase("stage2"): ...``."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def count(self, name: str, n: int) -> None:
        """Add ``n`` to the count ``name`` (e.g. the tiles a cascade's stage 2 ran on, of those it could)."""
        self.counts[name] = self.counts.get(name, 0) + n

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
