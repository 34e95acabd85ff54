"""A network started from pretrained weights (``model.pretrained``: a Hugging Face hub id or a local folder).

The GPU recipe starts stage 1 from ImageNet weights (``nvidia/mit-b3`` for SegFormer-B3), as the strong entries on
this task do. The checkpoint records the preset, and a cascade's stage 2 and every later load build the network
from the preset's sizes, so the stored sizes must be the preset's: a mismatch is a one-line error naming both. A
SegFormer's decode head is new (the hub's mit-b* models are ImageNet encoders): it gets the preset's width, and
any classifier that starts fresh gets the class-prior bias, as a randomly initialised one does. Without the hub
(offline, ``HF_HUB_OFFLINE=1``) the error says how to use a local folder, or random weights, instead.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from handseg.format.classes import ID2LABEL, LABEL2ID
from handseg.model.presets import ModelConfig, hf_config, init_head_prior, model_class
from handseg.runtime.errors import DataFormatError

SIZE_KEYS = {"segformer": ("hidden_sizes", "depths", "num_attention_heads"),
             "upernet": ("hidden_size", "auxiliary_channels", "backbone_config.hidden_sizes", "backbone_config.depths")}


def offline_hint(name: str) -> str:
    return (f"where the hub can be reached, `huggingface-cli download {name} --local-dir DIR` and set "
            "model.pretrained: DIR, or start from random weights with --set model.pretrained=null")


def load_pretrained(cfg: ModelConfig) -> nn.Module:
    """``from_pretrained(cfg.pretrained)`` with the project's 29 classes, checked against the preset (see the
    module docstring); DataFormatError naming the source otherwise."""
    source = Path(cfg.pretrained).expanduser()
    local = source.is_dir()
    if (source.is_absolute() or cfg.pretrained.startswith(".")) and not local:
        raise DataFormatError(source, "pretrained model folder not found")
    extra = {k: v for k, v in cfg.overrides.items() if k != "backbone_config"}
    if cfg.arch == "segformer":
        extra.setdefault("decoder_hidden_size", hf_config(cfg).decoder_hidden_size)  # the head is new: preset width
    try:
        model, loading = model_class(cfg.arch).from_pretrained(
            str(source) if local else cfg.pretrained, id2label=dict(ID2LABEL), label2id=dict(LABEL2ID),
            ignore_mismatched_sizes=True, use_safetensors=True, output_loading_info=True, **extra)
    except (OSError, ValueError) as exc:
        said = " ".join(str(exc).split())[:160]
        where = "" if local else f"; {offline_hint(cfg.pretrained)}"
        raise DataFormatError(cfg.pretrained, f"cannot load pretrained weights ({said}){where}") from None
    check_sizes(model, cfg)
    fresh = [*loading.get("missing_keys", []), *(str(k[0] if isinstance(k, tuple) else k)
                                                   for k in loading.get("mismatched_keys", []))]
    if cfg.prior_prob is not None and any("classifier" in k for k in fresh):
        init_head_prior(model, cfg.prior_prob)
    return model


def check_sizes(model: nn.Module, cfg: ModelConfig) -> None:
    """The loaded network's sizes must be the preset's (what the checkpoint records and later loads build)."""
    preset = hf_config(cfg)
    for key in SIZE_KEYS[cfg.arch]:
        got, want = _get(model.config, key), _get(preset, key)
        if got is not None and list(_listed(got)) != list(_listed(want)):
            raise DataFormatError(cfg.pretrained, f"its {key} is {got}, preset {cfg.arch}/{cfg.preset} has {want}: "
                                                  "set model.preset to the one these weights were trained as")


def _get(config, dotted: str):
    for name in dotted.split("."):
        config = getattr(config, name, None)
    return config


def _listed(value):
    return value if isinstance(value, (list, tuple)) else [value]
