"""Multi-label segmentation losses: BCE, soft Dice, Focal, and their weighted sum from the config.

Targets are 29 independent binary masks (bones overlap), so every loss here works per class on sigmoid
outputs, never on a softmax over classes.

How the logits meet the masks: SegFormer returns logits at 1/4 of the input resolution, UperNet at the
full input resolution. With ``loss.resolution: mask`` (the default) :class:`SegLoss` upsamples the logits
**bilinearly** (``align_corners=False``) to the mask size before any loss is computed, exactly as inference
upsamples logits before thresholding, so the loss is measured where the metric is measured. With
``loss.resolution: logits`` the masks are instead area-downsampled to the logits' size (``mode="area"``):
each target becomes the fraction of the logit cell the bone covers, a soft target in [0, 1] that keeps the
sub-pixel boundary position. That is 16x fewer loss elements for SegFormer; on a CPU the loss at mask size
costs several times the forward pass of a small model, so the demo configs use it. All losses are computed in
float32, also under bf16/fp16 autocast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from handseg.model.io import upsample_logits
from handseg.runtime.config_schema import FieldError


@dataclass
class LossTerm:
    """One term of the weighted sum."""

    name: Literal["bce", "dice", "focal"]
    weight: float = 1.0

    def check(self) -> None:
        if self.weight < 0:
            raise FieldError("weight", f"must be >= 0, got {self.weight}")


@dataclass
class LossConfig:
    """``terms``: the weighted sum; ``focal_gamma``/``focal_alpha``: focal loss shape; ``dice_smooth``: soft-Dice
    smoothing added to numerator and denominator (per image and class); ``resolution``: where logits meet masks
    (``mask``: logits upsampled to the mask size; ``logits``: masks area-downsampled to the logits' size);
    ``dice_mode``: soft Dice per (image, class) or per class over the whole batch (see :func:`soft_dice_loss`)."""

    terms: list[LossTerm] = field(default_factory=lambda: [LossTerm("bce", 1.0), LossTerm("dice", 1.0)])
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    dice_smooth: float = 1.0
    resolution: Literal["mask", "logits"] = "mask"
    dice_mode: Literal["image", "batch"] = "image"

    def check(self) -> None:
        if not self.terms:
            raise FieldError("terms", "at least one loss term is required")
        names = [t.name for t in self.terms]
        if len(set(names)) != len(names):
            raise FieldError("terms", f"each loss may appear once, got {names}")
        if sum(t.weight for t in self.terms) <= 0:
            raise FieldError("terms", "the weights must not all be zero")
        if self.focal_gamma < 0:
            raise FieldError("focal_gamma", f"must be >= 0, got {self.focal_gamma}")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise FieldError("focal_alpha", f"must be in [0, 1], got {self.focal_alpha}")
        if self.dice_smooth < 0:
            raise FieldError("dice_smooth", f"must be >= 0, got {self.dice_smooth}")


def match_targets(targets: Tensor, size: tuple[int, int]) -> Tensor:
    """Area-downsample targets (B, C, H, W) to ``size`` = (h, w): per-cell bone coverage in [0, 1], float32."""
    targets = targets.float()
    if tuple(targets.shape[-2:]) != tuple(size):
        targets = F.interpolate(targets, size=size, mode="area")
    return targets


def bce_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy over all pixels and classes. logits, targets: (B, C, H, W) float."""
    return F.binary_cross_entropy_with_logits(logits, targets)


def soft_dice_loss(logits: Tensor, targets: Tensor, smooth: float = 1.0, mode: str = "image") -> Tensor:
    """1 - soft Dice on sigmoid probabilities. logits, targets: (B, C, H, W) float.

    ``mode="image"``: per image and class, then averaged; weights small bones like large ones, as the
    competition metric does, and suits whole images, where every bone is present. ``mode="batch"``: each
    class summed over the whole batch (nnU-Net's batch Dice); suits crops, where a class absent from a crop
    would otherwise reward an empty mask and can pull a fine-tuned model into predicting nothing.
    """
    probs = torch.sigmoid(logits).flatten(2)
    targets = targets.flatten(2)
    inter = (probs * targets).sum(-1)
    denom = probs.sum(-1) + targets.sum(-1)
    if mode == "batch":
        inter, denom = inter.sum(0), denom.sum(0)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    return 1.0 - dice.mean()


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, alpha: float | None = None) -> Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels and classes. logits, targets: (B, C, H, W) float.

    ``gamma = 0`` and ``alpha = None`` give BCE exactly.
    """
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    loss = ce * (1.0 - p_t).pow(gamma) if gamma > 0 else ce
    if alpha is not None:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return loss.mean()


class SegLoss:
    """Weighted sum of the configured terms on the main logits, plus ``aux_weight`` x the same sum on the
    auxiliary logits (UperNet's FCN head) when given.

    ``__call__(logits (B,C,h,w), targets (B,C,H,W) float {0,1}, aux_logits=None) -> (loss scalar float32,
    parts)`` where ``parts`` maps each term name (and ``aux``) to a detached scalar tensor for logging.
    """

    def __init__(self, cfg: LossConfig, aux_weight: float = 0.4):
        self.cfg = cfg
        self.aux_weight = aux_weight

    def _terms(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.cfg.resolution == "logits" and logits.shape[-1] < targets.shape[-1]:
            targets = match_targets(targets, tuple(logits.shape[-2:]))
            logits = logits.float()
        else:
            logits = upsample_logits(logits, tuple(targets.shape[-2:]))
            targets = targets.float()
        parts: dict[str, Tensor] = {}
        total = logits.new_zeros(())
        for term in self.cfg.terms:
            if term.name == "bce":
                value = bce_loss(logits, targets)
            elif term.name == "dice":
                value = soft_dice_loss(logits, targets, self.cfg.dice_smooth, self.cfg.dice_mode)
            else:
                value = focal_loss(logits, targets, self.cfg.focal_gamma, self.cfg.focal_alpha)
            parts[term.name] = value
            total = total + term.weight * value
        return total, parts

    def __call__(self, logits: Tensor, targets: Tensor, aux_logits: Tensor | None = None):
        total, parts = self._terms(logits, targets)
        logged = {k: v.detach() for k, v in parts.items()}
        if aux_logits is not None and self.aux_weight > 0:
            aux_total, _ = self._terms(aux_logits, targets)
            total = total + self.aux_weight * aux_total
            logged["aux"] = aux_total.detach()
        return total, logged
