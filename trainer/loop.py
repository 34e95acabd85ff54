"""One epoch of training and one validation, under Accelerate.

:func:`train_one_epoch`: forward, loss, backward, clip, step, schedule, EMA, log. Label batches arrive in the
loader's format (bit-packed by default) on the accelerator's device and are unpacked there by
:func:`trainer.labels.labels_to_float`. Gradient accumulation goes through ``accelerator.accumulate`` (the
optimiser really steps, and DDP really all-reduces, once per ``grad_accum_steps`` micro-batches); mixed
precision comes from the Accelerate config. A NaN or infinite loss, or a stop request (SIGINT/SIGTERM, or the
launcher gone), is agreed on by all processes before anyone acts on it, so no process is left waiting in a
collective; a check waits for the device, so on a GPU it happens every ``plan.check_every`` optimiser steps rather
than after every micro-batch (:class:`trainer.loss_watch.LossWatch` names the first bad step). Each epoch iterates
:func:`trainer.loader.epoch_loader`: the data of (seed, epoch), and in a resumed epoch only the batches not yet
trained.

:func:`validate`: the evaluator's own scoring code (:func:`handseg.inference.scoring.score_sharded`) on this process's
shard of the validation fold, gathered; every image is counted exactly once (checked). On a GPU it runs under the
run's mixed precision (autocast), on the CPU in float32.
"""

from __future__ import annotations

import time

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn
from tqdm.auto import tqdm

from handseg.inference.engine import eager_engine
from handseg.inference.scoring import ScoreResult, score_sharded
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.factory import forward_logits, forward_train
from handseg.model.io import logits_over_windows
from handseg.runtime.errors import HandSegError
from trainer.labels import labels_to_float
from trainer.loader import epoch_loader
from trainer.loss_watch import LossWatch
from trainer.state import EpochRun, TrainState
from trainer.stop_flag import StopFlag


class NonFiniteLossError(HandSegError):
    """The loss became NaN or infinite; the message names the optimiser step."""


class TrainModule(nn.Module):
    """``forward(pixel_values, ...) -> (logits, aux_logits | None)`` around the Hugging Face model, so that
    UperNet's auxiliary head (run outside the HF forward) still goes through DDP's forward.

    A cascade's stage 2 also holds its stage 1 (``prior``, frozen, always in eval mode) and takes
    ``prior_pixel_values`` (B, 3, S, S) and ``window`` (B, 4) (see :class:`trainer.datasets.CascadeCropDataset`):
    stage 1's probabilities over each crop are 29 more input channels, and stage 1's logits are added to the
    output, which is how inference combines them. ``aux=False`` (``aux_loss_weight: 0``): UperNet's auxiliary head
    is not run and its parameters are frozen, so under DDP no trained parameter goes without a gradient."""

    def __init__(self, model: nn.Module, prior: nn.Module | None = None, aux: bool = True):
        super().__init__()
        self.model = model
        self.prior = prior
        self.aux = aux
        head = getattr(model, "auxiliary_head", None)
        if not aux and head is not None:
            head.requires_grad_(False)
        if prior is not None:
            prior.requires_grad_(False)

    def train(self, mode: bool = True) -> "TrainModule":
        super().train(mode)
        if self.prior is not None:
            self.prior.eval()
        return self

    def forward(self, pixel_values: torch.Tensor, prior_pixel_values: torch.Tensor | None = None,
                window: torch.Tensor | None = None):
        if self.prior is None:
            return forward_train(self.model, pixel_values, aux=self.aux)
        crop = pixel_values.shape[-1]
        with torch.no_grad():
            prior = forward_logits(self.prior, prior_pixel_values)
            over_crop = logits_over_windows(torch.sigmoid(prior), window, crop, crop)  # probabilities, upsampled
        logits, aux = forward_train(self.model, torch.cat([pixel_values, over_crop], dim=1), aux=self.aux)
        logits = logits + logits_over_windows(prior, window, crop, logits.shape[-1])
        if aux is not None:
            aux = aux + logits_over_windows(prior, window, crop, aux.shape[-1])
        return logits, aux


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


def train_one_epoch(accelerator: Accelerator, state: TrainState, loader, *, epoch: int, run: EpochRun,
                    stop: StopFlag) -> bool:
    """Train ``epoch`` until the end of ``loader`` or ``run.plan.batches`` micro-batches, resuming after
    ``progress.batch_in_epoch``. Returns False when a stop was requested (state not yet saved).

    The loader's sampler order and every item's augmentation depend on (seed, epoch): the epoch is set here
    (:func:`trainer.loader.epoch_loader`), and a resumed epoch skips the batches already trained, in the same
    order, without loading them."""
    progress, model = state.progress, state.model
    model.train()
    loader = epoch_loader(loader, epoch, skip=progress.batch_in_epoch)
    stopped = train_batches(accelerator, state, loader, epoch=epoch, run=run, stop=stop)
    sync_buffers(accelerator, accelerator.unwrap_model(model), *([state.ema.module] if state.ema else []))
    if stopped:
        return False
    progress.epoch, progress.batch_in_epoch = epoch + 1, 0
    return True


def train_batches(accelerator: Accelerator, state: TrainState, loader, *, epoch: int, run: EpochRun,
                  stop: StopFlag) -> bool:
    """The batches of one epoch (see :func:`train_one_epoch`; ``loader``: any iterable of batch dicts on the
    device, as ``scripts/gpu_smoke.py`` times it), with a progress bar on the main process; returns whether a
    stop was requested."""
    progress, plan = state.progress, run.plan
    with tqdm(total=plan.batches, initial=progress.batch_in_epoch, desc=f"epoch {epoch + 1}", leave=False,
              disable=not accelerator.is_local_main_process, dynamic_ncols=True) as bar:  # closed before an error
        seen, t0 = 0, time.perf_counter()
        stopped, watch = False, LossWatch()
        for batch in ([] if progress.batch_in_epoch >= plan.batches else loader):
            with accelerator.accumulate(state.model):
                logits, aux = state.model(**{k: v for k, v in batch.items() if k != "labels"})
                labels = labels_to_float(batch["labels"])  # packed (B, h, w) int32 -> (B, 29, h, w), on the device
                loss, parts = run.loss_fn(logits, labels, aux)
                watch.add(loss, step=progress.step + 1, epoch=epoch + 1, batch=progress.batch_in_epoch + 1)
                if plan.check_every == 1 or progress.batch_in_epoch + 1 >= plan.batches:
                    stopped = check_flags(accelerator, watch, stop)  # before the step: a bad loss is never applied
                optimiser_step(accelerator, state, loss, run.clip_grad_norm)
            progress.batch_in_epoch += 1
            seen += batch["pixel_values"].shape[0] * accelerator.num_processes
            bar.update(1)
            if accelerator.sync_gradients:
                progress.step += 1
                state.schedule.step()
                if state.ema is not None:
                    state.ema.update(accelerator.unwrap_model(state.model).model)
                if progress.step % run.log_every == 0:
                    log_step(accelerator, state, bar, (loss, parts), seen / max(time.perf_counter() - t0, 1e-9),
                             epoch + progress.batch_in_epoch / plan.batches)
                if plan.check_every > 1 and progress.step % plan.check_every == 0:
                    stopped = check_flags(accelerator, watch, stop)
            if (stopped and accelerator.sync_gradients) or progress.batch_in_epoch >= plan.batches:
                if hasattr(loader, "end") and hasattr(loader, "gradient_state"):
                    loader.end()  # tell Accelerate's loader we left early (it only does so at the end of the data)
                break
    return stopped


def optimiser_step(accelerator: Accelerator, state: TrainState, loss, clip_grad_norm: float | None) -> None:
    """Backward, clipping (at the end of an accumulation cycle) and the optimiser step (Accelerate skips it inside
    a cycle)."""
    accelerator.backward(loss)
    if accelerator.sync_gradients and clip_grad_norm is not None:
        accelerator.clip_grad_norm_(state.model.parameters(), clip_grad_norm)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)


def log_step(accelerator: Accelerator, state: TrainState, bar, loss_parts: tuple, images_per_s: float,
             epoch: float) -> None:
    """Log loss (and its parts), learning rate and throughput to the trackers and the progress bar."""
    loss, parts = loss_parts
    log = {f"train/{k}": float(v) for k, v in parts.items()}
    log.update({"train/loss": float(loss.detach()), "train/lr": state.schedule.get_last_lr()[0],
                "train/images_per_s": images_per_s, "train/epoch": epoch})
    accelerator.log(log, step=state.progress.step)
    bar.set_postfix(loss=f"{log['train/loss']:.4f}", lr=f"{log['train/lr']:.2e}")


def check_flags(accelerator: Accelerator, watch: LossWatch, stop: StopFlag) -> bool:
    """Agree on the loss and stop flags over all processes: a non-finite loss raises NonFiniteLossError naming its
    step; returns whether a stop was requested. Waits for the device (reads the losses)."""
    bad_here = watch.first_bad()
    bad, stopped = agree(accelerator, bad_here is not None, stop.signum is not None)
    if bad:
        raise NonFiniteLossError(watch.message(bad_here))
    return stopped


def validation_precision(mixed_precision: str, device: torch.device) -> str:
    """The precision validation runs in: the run's mixed precision (fp16, bf16) on a GPU, float32 on the CPU (where
    the run's Dice figures were measured in float32)."""
    if device.type == "cpu" or mixed_precision not in ("fp16", "bf16"):
        return "fp32"
    return mixed_precision


def validate(accelerator: Accelerator, model: nn.Module, samples: list, settings: InferenceSettings,
             threshold: float, prior: nn.Module | None = None) -> ScoreResult | None:
    """Score ``model`` (the unwrapped Hugging Face model, every process; with a cascade's ``prior``) on ``samples``
    in eager mode (under the run's mixed precision on a GPU, float32 on the CPU, like the evaluator's reference
    engine); the gathered result on the main process, None elsewhere."""
    was_training = model.training
    precision = validation_precision(str(accelerator.mixed_precision), accelerator.device)
    engine = eager_engine(model, precision, accelerator.device, prior=prior)
    result = score_sharded(InferenceCall(engine, settings, accelerator.device, threshold), samples, accelerator)
    model.train(was_training)
    if not accelerator.is_main_process:
        return None
    if len(result.names) != len(samples) or len(set(result.names)) != len(result.names):
        raise RuntimeError(f"validation gathered {len(result.names)} results for {len(samples)} images")
    return result


def broadcast_mean(accelerator: Accelerator, result: ScoreResult | None) -> float:
    """The main process's mean Dice on every process (so all take the same best/early-stop decisions)."""
    value = [result.summary().mean if result is not None else 0.0]
    if accelerator.num_processes > 1:
        broadcast_object_list(value, from_process=0)
    return float(value[0])
