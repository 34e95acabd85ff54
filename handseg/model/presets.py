"""What a network is, before it is built: :class:`ModelConfig` (the ``model:`` block of a training YAML, recorded in
every checkpoint), the size presets of SegFormer (MiT b0-b5) and UperNet-ConvNeXt, and the Hugging Face config a
preset gives (29 labels from the project's classes). :mod:`handseg.model.factory` builds networks from it;
:mod:`handseg.model.pretrained` checks pretrained weights against it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import ConvNextConfig, ConvNextV2Config, SegformerConfig, UperNetConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from handseg.format.classes import ID2LABEL, LABEL2ID, NUM_CLASSES
from handseg.runtime.config_schema import FieldError

# SegFormer (Mix Transformer) sizes from the paper / the official nvidia/mit-b* configs. Every preset keeps
# the library defaults sr_ratios (8, 4, 2, 1), patch_sizes (7, 3, 3, 3), strides (4, 2, 2, 2), mlp_ratios 4.
_MIT_HEADS = [1, 2, 5, 8]
_MIT_WIDE = [64, 128, 320, 512]
SEGFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "test": dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                 decoder_hidden_size=32),
    # Small enough to train on a 2-core CPU; a 64-wide decoder halves the cost of a 128-wide one at 512 px.
    "demo": dict(hidden_sizes=[16, 32, 80, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 4],
                 decoder_hidden_size=64),
    "mit-b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=_MIT_HEADS,
                   decoder_hidden_size=256),
    "mit-b1": dict(hidden_sizes=_MIT_WIDE, depths=[2, 2, 2, 2], num_attention_heads=_MIT_HEADS,
                   decoder_hidden_size=256),
    "mit-b2": dict(hidden_sizes=_MIT_WIDE, depths=[3, 4, 6, 3], num_attention_heads=_MIT_HEADS,
                   decoder_hidden_size=768),
    "mit-b3": dict(hidden_sizes=_MIT_WIDE, depths=[3, 4, 18, 3], num_attention_heads=_MIT_HEADS,
                   decoder_hidden_size=768),
    "mit-b4": dict(hidden_sizes=_MIT_WIDE, depths=[3, 8, 27, 3], num_attention_heads=_MIT_HEADS,
                   decoder_hidden_size=768),
    "mit-b5": dict(hidden_sizes=_MIT_WIDE, depths=[3, 6, 40, 3], num_attention_heads=_MIT_HEADS,
                   decoder_hidden_size=768),
}

# UperNet presets: backbone family and sizes (ConvNeXt / ConvNeXt V2 papers) plus the decoder sizes of
# mmsegmentation's UperNet recipes (512-channel PPM/FPN head, 256-channel auxiliary FCN head on stage 3).
_UPERNET_HEAD = dict(hidden_size=512, auxiliary_channels=256)
UPERNET_PRESETS: dict[str, dict[str, Any]] = {
    "test": dict(backbone="convnext", hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                 hidden_size=32, auxiliary_channels=16),
    "demo": dict(backbone="convnext", hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1],
                 hidden_size=32, auxiliary_channels=32),
    "convnext-tiny": dict(backbone="convnext", hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3],
                          **_UPERNET_HEAD),
    "convnext-small": dict(backbone="convnext", hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3],
                           **_UPERNET_HEAD),
    "convnext-base": dict(backbone="convnext", hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3],
                          **_UPERNET_HEAD),
    "convnext-large": dict(backbone="convnext", hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3],
                           **_UPERNET_HEAD),
    "convnextv2-atto": dict(backbone="convnextv2", hidden_sizes=[40, 80, 160, 320], depths=[2, 2, 6, 2],
                            **_UPERNET_HEAD),
    "convnextv2-femto": dict(backbone="convnextv2", hidden_sizes=[48, 96, 192, 384], depths=[2, 2, 6, 2],
                             **_UPERNET_HEAD),
    "convnextv2-pico": dict(backbone="convnextv2", hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 6, 2],
                            **_UPERNET_HEAD),
    "convnextv2-nano": dict(backbone="convnextv2", hidden_sizes=[80, 160, 320, 640], depths=[2, 2, 8, 2],
                            **_UPERNET_HEAD),
    "convnextv2-tiny": dict(backbone="convnextv2", hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3],
                            **_UPERNET_HEAD),
    "convnextv2-base": dict(backbone="convnextv2", hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3],
                            **_UPERNET_HEAD),
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"segformer": SEGFORMER_PRESETS, "upernet": UPERNET_PRESETS}
_BACKBONE_CONFIGS = {"convnext": ConvNextConfig, "convnextv2": ConvNextV2Config}
# The transformers model class of each architecture, by name: the modelling code (and what it imports: accelerate,
# torchvision, scipy, sympy; about 260 MiB of resident memory) is imported only when a model is built, so a
# process that runs a compiled engine never loads it.
MODEL_CLASSES = {"segformer": "SegformerForSemanticSegmentation", "upernet": "UperNetForSemanticSegmentation"}
_RESERVED_KEYS = {"num_labels", "id2label", "label2id"}
_BACKBONE_EXTRA_KEYS = {"out_features", "out_indices"}


@dataclass
class ModelConfig:
    """Which network to build; checked by ``check`` (called by the YAML loader and :func:`build_model`).
    ``overrides`` passes extra Hugging Face config keys, e.g. ``{drop_path_rate: 0.2}``; for UperNet a nested
    ``backbone_config`` mapping goes to the ConvNeXt config."""

    arch: Literal["segformer", "upernet"] = "segformer"
    preset: str = "mit-b0"
    pretrained: str | None = None
    aux_loss_weight: float = 0.4
    prior_prob: float | None = 0.01
    overrides: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        presets = PRESETS.get(self.arch)
        if presets is None:
            raise FieldError("arch", f"must be one of {sorted(PRESETS)}, got {self.arch!r}")
        if self.preset not in presets:
            raise FieldError("preset", f"unknown {self.arch} preset {self.preset!r} (allowed: {', '.join(presets)})")
        if not (self.aux_loss_weight >= 0 and math.isfinite(self.aux_loss_weight)):
            raise FieldError("aux_loss_weight", f"must be a finite number >= 0, got {self.aux_loss_weight}")
        if self.prior_prob is not None and not 0.0 < self.prior_prob < 1.0:
            raise FieldError("prior_prob", f"must be in (0, 1) or null, got {self.prior_prob}")
        if self.pretrained is not None and not self.pretrained.strip():
            raise FieldError("pretrained", "must be a hub id or a folder, got an empty string")
        _check_overrides(self)


def _config_keys(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def _check_overrides(cfg: ModelConfig) -> None:
    overrides = dict(cfg.overrides)
    reserved = sorted(_RESERVED_KEYS & set(overrides))
    if reserved:
        raise FieldError("overrides", f"{reserved[0]} is set from the project's classes and cannot be overridden")
    if cfg.arch == "segformer":
        allowed = _config_keys(SegformerConfig)
    else:
        allowed = _config_keys(UperNetConfig)
        backbone = overrides.pop("backbone_config", {})
        if not isinstance(backbone, dict):
            raise FieldError("overrides", "backbone_config must be a mapping of ConvNeXt config keys")
        family = UPERNET_PRESETS[cfg.preset]["backbone"]
        backbone_allowed = _config_keys(_BACKBONE_CONFIGS[family]) | _BACKBONE_EXTRA_KEYS
        unknown = sorted(set(backbone) - backbone_allowed)
        if unknown:
            raise FieldError("overrides", f"unknown {family} backbone key {unknown[0]!r}")
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise FieldError("overrides", f"unknown {cfg.arch} config key {unknown[0]!r}")
    try:
        hf_config(cfg)  # the Hugging Face config classes check value types
    except Exception as exc:  # noqa: BLE001 - StrictDataclassFieldValidationError, ValueError, TypeError
        raise FieldError("overrides", _one_line(exc)) from None


def hf_config(cfg: ModelConfig) -> SegformerConfig | UperNetConfig:
    """The Hugging Face config that ``cfg`` describes (29 labels, ``id2label`` from the project's classes)."""
    labels = dict(num_labels=NUM_CLASSES, id2label=dict(ID2LABEL), label2id=dict(LABEL2ID))
    overrides = dict(cfg.overrides)
    preset = dict(PRESETS[cfg.arch][cfg.preset])
    if cfg.arch == "segformer":
        return SegformerConfig(**{**preset, **overrides, **labels})
    family = preset.pop("backbone")
    backbone_kwargs = {"hidden_sizes": preset.pop("hidden_sizes"), "depths": preset.pop("depths"),
                       "out_features": ["stage1", "stage2", "stage3", "stage4"]}
    backbone_kwargs.update(overrides.pop("backbone_config", {}))
    backbone = _BACKBONE_CONFIGS[family](**backbone_kwargs)
    return UperNetConfig(backbone_config=backbone, **{**preset, **overrides, **labels})


def model_class(arch: str) -> type[PreTrainedModel]:
    """The transformers model class of ``arch`` (imported now; see ``MODEL_CLASSES``)."""
    import transformers

    return getattr(transformers, MODEL_CLASSES[arch])


def init_head_prior(model: torch.nn.Module, prior_prob: float) -> None:
    """Set the bias of every 29-class classifier (main and auxiliary head) to ``log(p / (1 - p))``.

    Each bone covers well under 1% of an image, so with a zero bias the BCE term first spends hundreds of
    steps pushing every logit negative before any shape is learned (RetinaNet's prior initialisation).
    Measured on the demo SegFormer, one batch of 384 px phantom images: train Dice 0.00 after 60 steps
    with a zero bias, 0.55 with ``prior_prob = 0.01``.
    """
    bias = math.log(prior_prob / (1.0 - prior_prob))
    for name, module in model.named_modules():
        if name.endswith("classifier") and isinstance(module, torch.nn.Conv2d) and module.bias is not None:
            if module.out_channels == NUM_CLASSES:
                torch.nn.init.constant_(module.bias, bias)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def size_divisor(cfg: ModelConfig) -> int:
    """Input sides must be multiples of this (the backbone's total stride, 32 for every preset)."""
    config = hf_config(cfg)
    if cfg.arch == "segformer":
        return int(math.prod(config.strides))
    patch = config.backbone_config.patch_size
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    return int(patch) * 2 ** (len(config.backbone_config.depths) - 1)


def with_input_channels(cfg: ModelConfig, channels: int) -> ModelConfig:
    """The same network taking ``channels`` input channels (a cascade's stage 2: the image and stage 1's 29
    probabilities), as a config override that checkpoints record."""
    overrides = dict(cfg.overrides)
    if cfg.arch == "segformer":
        overrides["num_channels"] = channels
    else:
        overrides["backbone_config"] = {**overrides.get("backbone_config", {}), "num_channels": channels}
    return dataclasses.replace(cfg, overrides=overrides, pretrained=None)
