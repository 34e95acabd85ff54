"""What a training run prints (main process): the start line, the run's summary line, each validation's table."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from handseg.format.metrics import format_dice_table
from handseg.model.factory import count_parameters
from handseg.model.io import InputSpec
from handseg.runtime.devices import device_label, start_line
from trainer.config import TrainConfig
from trainer.state import EpochPlan, TrainState


def announce_start(cfg: TrainConfig, accelerator: Accelerator) -> None:
    """The start line: every process's device, world size, mixed precision, effective batch."""
    devices = gather_object([device_label(accelerator.device)])
    accelerator.print(start_line(devices, accelerator.mixed_precision, cfg.data.batch_size, cfg.grad_accum_steps),
                      flush=True)


def run_summary(cfg: TrainConfig, accelerator: Accelerator, model: torch.nn.Module, n_images: tuple[int, int],
                spec: InputSpec, plan: EpochPlan) -> str:
    """Stage, model and size, ``n_images`` (train, validation), batches and epochs, processes, precision, input and
    output folder, in one line."""
    return (f"stage {cfg.stage} | {cfg.model.arch}/{cfg.model.preset} ({count_parameters(model) / 1e6:.2f} M params) "
            f"| {n_images[0]} train / {n_images[1]} val images | {plan.batches} batches x {plan.epochs} epochs on "
            f"{accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision} | input "
            f"{spec.mode} {spec.model_size} px | output {cfg.run_dir}")


def report_validation(accelerator: Accelerator, state: TrainState, spec: InputSpec, result) -> None:
    """Print the per-class table of a validation ``result`` (None: nothing) and log its Dice."""
    if result is None:
        return
    summary, progress = result.summary(), state.progress
    accelerator.print(f"\nvalidation after epoch {progress.epoch} ({summary.n_images} images, {spec.mode} "
                      f"{spec.model_size} px):\n{format_dice_table(summary)}\nmean Dice {summary.mean:.4f} "
                      f"(best {progress.best_dice:.4f} at epoch {progress.best_epoch})")
    accelerator.log({"val/mean_dice": summary.mean, **{f"val/dice/{k}": v for k, v in summary.per_class.items()}},
                    step=progress.step)
