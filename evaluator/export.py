"""``torch.export`` of a checkpoint's logits module at a static tile shape.

Ahead-of-time compilers (AOTInductor, Torch-TensorRT) specialise on one input shape; the evaluator exports
``(batch, 3, side, side)`` and the engine pads short tile batches to ``batch``.
"""

from __future__ import annotations

import copy

import torch

from handseg.inference.engine import DTYPES
from handseg.model.factory import LogitsModule
from handseg.runtime.errors import ConfigError


def check_tile_size(side: int, divisor: int, source: str = "config", key: str = "tile_size") -> None:
    """A side the model's stride does not divide cannot be exported: ConfigError naming the key."""
    if side % divisor:
        lo, hi = side // divisor * divisor, (side // divisor + 1) * divisor
        raise ConfigError(
            source, key, f"{side} is not a multiple of the model's size divisor {divisor} (try {lo or hi} or {hi})"
        )


def example_input(batch: int, side: int, precision: str = "fp32", device: str = "cpu",
                  channels: int = 3) -> torch.Tensor:
    """A (batch, channels, side, side) example tensor in the engine's dtype (values like normalised X-rays)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, side, side, generator=gen)
    return x.to(device=device, dtype=DTYPES[precision])


def logits_module(model, precision: str = "fp32", device: str = "cpu") -> torch.nn.Module:
    """The model wrapped to return plain logits, cast to ``precision`` (strongly typed engines need that). A
    reduced precision casts a copy: the checkpoint's model stays float32 bit for bit, for the agreement reference
    and any later eager use in the process."""
    source = model if precision == "fp32" else copy.deepcopy(model)
    module = LogitsModule(source).eval().to(device)
    return module.to(DTYPES[precision])


def export_logits(
    model, shape: tuple[int, int, int, int], divisor: int, precision: str = "fp32", device: str = "cpu",
    source: str = "config",
) -> torch.export.ExportedProgram:
    """Export ``model`` (HF segmentation model) as logits (B,C,side,side) -> (B,29,side/s,side/s), the static input
    ``shape`` (B, C, side, side) (C: 3, or 3 + 29 for a cascade's stage 2).

    ``precision`` casts the weights (of a copy) and the example input (fp16/bf16 engines run in that dtype end to
    end).
    """
    batch, channels, side, _ = shape
    check_tile_size(side, divisor, source=source)
    module = logits_module(model, precision, device)
    x = example_input(batch, side, precision, device, channels)
    with torch.no_grad():
        return torch.export.export(module, (x,), strict=False)
