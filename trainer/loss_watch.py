"""The training losses since the last check, kept on the device so that checking them waits for it only then.

Reading a loss on the host (``bool(torch.isfinite(loss))``) waits until the GPU has computed it: after every
micro-batch that stalls the queue of kernels the host would otherwise run ahead with. The loop adds each loss
here and checks every few optimiser steps (:func:`trainer.loop.check_flags`); a NaN or infinite loss still stops
the run, naming the first step where it appeared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossWatch:
    """Losses (detached scalars on the device) with their (step, epoch, batch), since the last check."""

    pending: list[tuple[torch.Tensor, int, int, int]] = field(default_factory=list)

    def add(self, loss: torch.Tensor, step: int, epoch: int, batch: int) -> None:
        self.pending.append((loss.detach(), step, epoch, batch))

    def first_bad(self) -> tuple[float, int, int, int] | None:
        """The first non-finite loss since the last check as (value, step, epoch, batch), or None; one wait for the
        device. The pending losses are cleared when all are finite."""
        if not self.pending:
            return None
        values = torch.stack([p[0].float() for p in self.pending])
        finite = torch.isfinite(values)
        if bool(finite.all()):
            self.pending.clear()
            return None
        i = int((~finite).nonzero()[0, 0])
        _, step, epoch, batch = self.pending[i]
        return float(values[i]), step, epoch, batch

    @staticmethod
    def message(bad: tuple[float, int, int, int] | None) -> str:
        """The error line for a bad loss here, or for one found on another process (``bad`` None)."""
        advice = "lower optim.lr, check the data, or turn on clip_grad_norm"
        if bad is None:
            return f"the loss became NaN or infinite on another process; {advice}"
        value, step, epoch, batch = bad
        return f"loss is {value} at step {step} (epoch {epoch}, batch {batch}); {advice}"
