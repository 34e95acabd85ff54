"""Validation during training: the evaluator's own inference code on this process's shard, gathered.

Through :func:`handseg.validation.evaluate_sharded` (the function the evaluator calls, so training-time and
evaluation-time Dice cannot disagree) each process evaluates ``samples[process_index::num_processes]``, the
per-image ``[intersection, pred_sum, target_sum]`` counts are
gathered, and the main process computes the competition Dice: per image and class at the original
resolution, mean over images per class, then over classes. Every image is counted exactly once (checked).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn

from handseg.inference import InferenceSettings
from handseg.metrics import DiceSummary
from handseg.models import InputSpec, forward_logits
from handseg.validation import evaluate_sharded


@dataclass
class ValResult:
    """Gathered validation of one epoch (main process); ``per_image_dice`` is (N, 29) float64."""

    names: list[str]
    per_image_dice: np.ndarray
    summary: DiceSummary


def make_engine(model: nn.Module):
    """Eager engine for :func:`evaluate_images`: (B, 3, h, w) float32 -> logits (B, 29, h', w') float32."""

    @torch.no_grad()
    def engine(pixel_values: torch.Tensor) -> torch.Tensor:
        return forward_logits(model, pixel_values).float()

    return engine


def inference_settings(spec: InputSpec, batch_size: int, blend: str) -> InferenceSettings:
    """The inference settings validation uses (recorded in the checkpoint for the evaluator)."""
    return InferenceSettings(input=spec, batch_size=batch_size, blend=blend)


def validate(
    accelerator: Accelerator,
    model: nn.Module,
    samples: list,
    settings: InferenceSettings,
    threshold: float = 0.5,
) -> ValResult | None:
    """Evaluate ``model`` (unwrapped, any process) on ``samples``; returns the gathered result on the main
    process and None elsewhere. Runs in float32 eager mode, like the evaluator's reference engine."""
    was_training = model.training
    model.eval()
    result = evaluate_sharded(make_engine(model), samples, settings, accelerator.device, threshold, accelerator)
    model.train(was_training)
    if not accelerator.is_main_process:
        return None
    names = list(result.names)
    if len(names) != len(samples) or len(set(names)) != len(names):
        raise RuntimeError(f"validation gathered {len(names)} results for {len(samples)} images")
    return ValResult(names=names, per_image_dice=result.per_image_dice, summary=result.summary())


def broadcast_mean(accelerator: Accelerator, result: ValResult | None) -> float:
    """The main process's mean Dice on every process (so all take the same best/early-stop decisions)."""
    value = [result.summary.mean if result is not None else 0.0]
    if accelerator.num_processes > 1:
        broadcast_object_list(value, from_process=0)
    return float(value[0])
