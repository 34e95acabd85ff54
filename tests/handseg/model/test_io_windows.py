"""A cascade's stage-1 logits over a batch of crops: the batched form (no per-window loop or host sync, what a GPU
runs) equals the per-window loop (the CPU's) to the bit."""

from __future__ import annotations

import pytest
import torch

from handseg.model.io import logits_over_windows


def _windows(n: int, side: int, crop: int, gen: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, side - crop + 1, (n, 2), generator=gen).float()
    starts[0] = 0.0  # one at the top-left border
    starts[-1] = float(side - crop)  # one at the bottom-right border
    return torch.cat([starts, torch.full((n, 2), float(side))], dim=1)


@pytest.mark.parametrize("batch, grid, side, crop, out, dtype", [
    (4, 64, 2048, 512, 512, torch.float32),    # the demo's cascade: 384 px prior, 512 px native crops
    (3, 32, 256, 128, 32, torch.float32),      # the logits' resolution (out < crop), as the output is added
    (2, 48, 1000, 400, 400, torch.bfloat16),   # a prior run under bf16 autocast, a side that is not a power of 2
])
def test_batched_windows_equal_the_per_window_loop(batch, grid, side, crop, out, dtype):
    gen = torch.Generator().manual_seed(batch)
    logits = torch.randn(batch, 29, grid, grid, generator=gen).to(dtype)
    windows = _windows(batch, side, crop, gen)
    loop = logits_over_windows(logits, windows, crop, out, batched=False)
    together = logits_over_windows(logits, windows, crop, out, batched=True)
    assert together.dtype == loop.dtype == torch.float32 and together.shape == (batch, 29, out, out)
    assert torch.equal(together, loop)
    one = logits[:1]  # one whole-image prediction sampled over several windows
    assert torch.equal(logits_over_windows(one, windows, crop, out, batched=True),
                       logits_over_windows(one, windows, crop, out, batched=False))


def test_the_default_is_the_loop_on_the_cpu():
    gen = torch.Generator().manual_seed(0)
    logits, windows = torch.randn(2, 29, 16, 16, generator=gen), _windows(2, 256, 64, gen)
    assert torch.equal(logits_over_windows(logits, windows, 64, 64), logits_over_windows(logits, windows, 64, 64,
                                                                                         batched=False))
