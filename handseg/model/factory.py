"""Model factory: Hugging Face SegFormer and UperNet-ConvNeXt with 29 sigmoid outputs.

One :class:`~handseg.model.presets.ModelConfig` (a block of the training YAML) picks the architecture and a size
preset; :func:`build_model`, the one door to a network, turns it into a ``transformers`` model, randomly
initialised from its config or loaded with ``from_pretrained`` when ``pretrained`` names a hub id or a local
folder (:mod:`handseg.model.pretrained`).

Output resolution differs between the two architectures:

* SegFormer's decode head predicts at 1/4 of the input resolution, ``(B, 29, h/4, w/4)``; the loss and
  inference meet full-resolution masks with :func:`handseg.model.io.upsample_logits`.
* UperNet's main and auxiliary (FCN) heads are upsampled to the input size inside the model, exactly as the
  Hugging Face forward does, so their logits are ``(B, 29, h, w)``.

The Hugging Face UperNet forward computes the auxiliary head but only uses it for its own cross-entropy loss;
it never returns those logits. :func:`forward_train` therefore runs the backbone and both heads itself, so the
auxiliary head can be trained with the project's multi-label loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel, UperNetForSemanticSegmentation

from handseg.format.classes import NUM_CLASSES
from handseg.model.presets import ModelConfig, hf_config, init_head_prior, model_class, with_input_channels
from handseg.model.pretrained import load_pretrained


def build_model(cfg: ModelConfig) -> PreTrainedModel:
    """Build the network: random init from the preset, or ``from_pretrained(cfg.pretrained)`` (hub id or local
    folder, safetensors only; :func:`handseg.model.pretrained.load_pretrained`: the stored sizes must be the
    preset's, and a fresh 29-class head starts at the class prior). A missing folder or an unreachable hub id is
    a one-line DataFormatError saying how to use a local folder or random weights instead."""
    cfg.check()
    if cfg.pretrained is not None:
        return load_pretrained(cfg)
    model = model_class(cfg.arch)(hf_config(cfg))
    if cfg.prior_prob is not None:
        init_head_prior(model, cfg.prior_prob)
    return model


def _is_upernet(model: nn.Module) -> bool:
    """By the config's model type: no modelling code is imported to ask (a SegFormer never loads UperNet's)."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) == "upernet"


def _upernet_heads(model: UperNetForSemanticSegmentation, pixel_values: torch.Tensor, aux: bool):
    """Backbone, decode head and (optionally) the auxiliary FCN head, as the HF forward runs them."""
    features = model.backbone(pixel_values).feature_maps
    size = pixel_values.shape[2:]
    logits = F.interpolate(model.decode_head(features), size=size, mode="bilinear", align_corners=False)
    aux_logits = None
    if aux and model.auxiliary_head is not None:
        aux_logits = F.interpolate(model.auxiliary_head(features), size=size, mode="bilinear", align_corners=False)
    return logits, aux_logits


def forward_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Main logits for ``pixel_values`` (B, 3, h, w) float: SegFormer (B, 29, h/4, w/4), UperNet (B, 29, h, w).
    UperNet's auxiliary head is skipped (it only serves training)."""
    if _is_upernet(model):
        return _upernet_heads(model, pixel_values, aux=False)[0]
    return model(pixel_values=pixel_values).logits


def forward_train(model: nn.Module, pixel_values: torch.Tensor,
                  aux: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits)`` for training: UperNet's auxiliary FCN logits (B, 29, h, w), or None for
    SegFormer, for UperNet built with ``use_auxiliary_head: false`` and with ``aux=False`` (the head is then not
    run: a loss weight of 0 must leave no parameter without a gradient under DDP)."""
    if _is_upernet(model):
        return _upernet_heads(model, pixel_values, aux=aux)
    return model(pixel_values=pixel_values).logits, None


class LogitsModule(nn.Module):
    """Wraps a segmentation model so that ``forward(pixel_values)`` returns the plain logits tensor
    (B, 29, h', w'); this is what ``torch.export`` traces (with a static tile shape) and what the eager
    engine calls."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return forward_logits(self.model, pixel_values)


def cascade_refiner(stage1: PreTrainedModel, stage1_cfg: ModelConfig) -> tuple[PreTrainedModel, ModelConfig]:
    """Stage 2 of a cascade, initialised from stage 1: input channels 3 + 29 (the image, then stage 1's
    probabilities), stage 1's weights everywhere, the extra input channels and every 29-class classifier at zero.
    Its output is added to stage 1's logits, so at step 0 the cascade predicts exactly what stage 1 predicts and
    training can only start from there. Returns the model and its config."""
    cfg = with_input_channels(stage1_cfg, 3 + NUM_CLASSES)
    model = model_class(cfg.arch)(hf_config(cfg))
    weights = model.state_dict()
    for name, tensor in stage1.state_dict().items():
        target = weights[name]
        if target.shape == tensor.shape:
            target.copy_(tensor)
        elif target.ndim == 4 and target.shape[1] == 3 + NUM_CLASSES and tensor.shape[1] == 3:
            target.zero_()
            target[:, :3].copy_(tensor)  # the stem sees the image as stage 1 did; the prior channels start at zero
        else:
            raise ValueError(f"{name}: stage 1 has {tuple(tensor.shape)}, the refiner {tuple(target.shape)}")
    for name, module in model.named_modules():
        if name.endswith("classifier") and isinstance(module, nn.Conv2d) and module.out_channels == NUM_CLASSES:
            weights[f"{name}.weight"].zero_()
            weights[f"{name}.bias"].zero_()
    model.load_state_dict(weights)
    return model, cfg


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (for logs and reports)."""
    return sum(p.numel() for p in model.parameters())
