"""One training epoch under Accelerate: forward, loss, backward, clip, step, EMA, log.

Label batches arrive in the loader's format (bit-packed by default) on the accelerator's device and are
unpacked there to (B, 29, h, w) float32 by :func:`trainer.labels.labels_to_float`.

Gradient accumulation goes through ``accelerator.accumulate`` (the optimiser really steps, and DDP
really all-reduces, once per ``grad_accum_steps`` micro-batches); mixed precision comes from the Accelerate
config through ``accelerator.prepare``. A NaN or infinite loss, or a stop request (SIGINT/SIGTERM), is
agreed on by all processes before anyone acts on it, so no process is left waiting in a collective.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from handseg.errors import HandSegError
from handseg.models import forward_train
from trainer.checkpointing import TrainProgress
from trainer.ema import EMA
from trainer.labels import labels_to_float
from trainer.losses import SegLoss
from trainer.optim import LRSchedule


class NonFiniteLossError(HandSegError):
    """The loss became NaN or infinite; the message names the optimiser step."""


class TrainModule(nn.Module):
    """``forward(pixel_values) -> (logits, aux_logits | None)`` around the Hugging Face model, so that
    UperNet's auxiliary head (run outside the HF forward) still goes through DDP's forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor):
        return forward_train(self.model, pixel_values)


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM; the loop saves a resumable state at the next step boundary and exits."""

    signum: int | None = None
    previous: dict = field(default_factory=dict)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up on the graceful path
            raise KeyboardInterrupt
        self.signum = signum


def agree(accelerator: Accelerator, *flags: bool) -> list[bool]:
    """Logical OR of each flag over all processes (one tiny all-reduce; free on a single process)."""
    if accelerator.num_processes == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=accelerator.device)
    return [bool(v > 0) for v in accelerator.reduce(t, reduction="sum").tolist()]


def sync_buffers(accelerator: Accelerator, *modules: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every process.

    DDP keeps parameters identical but each process updates running statistics on its own batches; DDP
    only re-broadcasts them at the next forward. Called before validation and saving, so every shard is
    validated with the same network and the saved weights are the ones every process holds.
    """
    if accelerator.num_processes == 1:
        return
    for module in modules:
        for buf in module.buffers():
            torch.distributed.broadcast(buf.data, src=0)


@dataclass
class EpochContext:
    """Everything one epoch needs (built once in ``train.py``)."""

    accelerator: Accelerator
    model: nn.Module  # prepared TrainModule
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    loss_fn: SegLoss
    ema: EMA | None
    progress: TrainProgress
    stop: StopFlag
    clip_grad_norm: float | None
    log_every: int
    batches_per_epoch: int


def train_one_epoch(ctx: EpochContext, loader, epoch: int) -> bool:
    """Train until the end of ``loader`` or ``ctx.batches_per_epoch`` micro-batches (resuming after
    ``progress.batch_in_epoch``). Returns False when a stop was requested (state not yet saved)."""
    acc, progress = ctx.accelerator, ctx.progress
    ctx.model.train()
    bar = tqdm(total=ctx.batches_per_epoch, initial=progress.batch_in_epoch, desc=f"epoch {epoch + 1}",
               disable=not acc.is_local_main_process, leave=False, dynamic_ncols=True)
    try:
        return _run(ctx, loader, epoch, bar)
    finally:
        bar.close()


def _run(ctx: EpochContext, loader, epoch: int, bar) -> bool:
    acc, progress = ctx.accelerator, ctx.progress
    seen, t0 = 0, time.perf_counter()
    batch_idx = progress.batch_in_epoch
    finished = batch_idx >= ctx.batches_per_epoch
    for batch in ([] if finished else loader):
        with acc.accumulate(ctx.model):
            logits, aux = ctx.model(batch["pixel_values"])
            labels = labels_to_float(batch["labels"])  # packed (B, h, w) int32 -> (B, 29, h, w), on the device
            loss, parts = ctx.loss_fn(logits, labels, aux)
            bad, stop = agree(acc, not bool(torch.isfinite(loss.detach())), ctx.stop.signum is not None)
            if bad:
                raise NonFiniteLossError(
                    f"loss is {float(loss.detach())} at step {progress.step + 1} (epoch {epoch + 1}, "
                    f"batch {batch_idx + 1}); lower optim.lr, check the data, or turn on clip_grad_norm"
                )
            acc.backward(loss)
            if acc.sync_gradients and ctx.clip_grad_norm is not None:
                acc.clip_grad_norm_(ctx.model.parameters(), ctx.clip_grad_norm)
            ctx.optimizer.step()
            ctx.optimizer.zero_grad(set_to_none=True)
        batch_idx += 1
        progress.batch_in_epoch = batch_idx
        seen += batch["pixel_values"].shape[0] * acc.num_processes
        bar.update(1)
        if acc.sync_gradients:
            progress.step += 1
            ctx.schedule.step()
            if ctx.ema is not None:
                ctx.ema.update(acc.unwrap_model(ctx.model).model)
            if progress.step % ctx.log_every == 0:
                elapsed = max(time.perf_counter() - t0, 1e-9)
                log = {f"train/{k}": float(v) for k, v in parts.items()}
                log.update({"train/loss": float(loss.detach()), "train/lr": ctx.schedule.get_last_lr()[0],
                            "train/images_per_s": seen / elapsed, "train/epoch": epoch + batch_idx / ctx.batches_per_epoch})
                acc.log(log, step=progress.step)
                bar.set_postfix(loss=f"{log['train/loss']:.4f}", lr=f"{log['train/lr']:.2e}")
        if stop and acc.sync_gradients:
            _leave(loader)
            return False
        if batch_idx >= ctx.batches_per_epoch:
            _leave(loader)
            break
    return True


def _leave(loader) -> None:
    """Tell Accelerate's loader we left it early (it only does so itself at the end of the data)."""
    if hasattr(loader, "end") and hasattr(loader, "gradient_state"):
        loader.end()


def batches_per_epoch(loader_len: int, max_steps: int | None, grad_accum: int) -> int:
    """Micro-batches per epoch on each process: the loader's length, capped at ``max_steps`` optimiser steps."""
    if max_steps is None:
        return loader_len
    return min(loader_len, max_steps * grad_accum)


def optimizer_steps(batches: int, grad_accum: int) -> int:
    """Optimiser steps per epoch for ``batches`` micro-batches (Accelerate steps on the last, partial group)."""
    return math.ceil(batches / grad_accum)
