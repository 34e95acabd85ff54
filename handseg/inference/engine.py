"""The one engine type: a logits function with what inference must know about it.

An :class:`Engine` maps a normalised float32 batch ``(B, 3, h, w)`` to float32 logits ``(B, 29, h', w')``,
contiguous, on its device, whatever runs inside: the eager PyTorch model (training's validation, the
evaluator's reference), an AOTInductor package or a Torch-TensorRT program (``evaluator.backends``). Compiled
engines have a static batch and input side: the engine splits a long batch and runs what is left over on its
``tail`` (the same network compiled at a smaller static batch, e.g. 1), or, without one, pads it with zeros; so
callers may pass any batch. Outputs given as a list/tuple (AOTInductor) or a Hugging Face output with
``logits`` are unwrapped here, once.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from handseg.model.factory import LogitsModule
from handseg.runtime.errors import HandSegError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def as_logits(out) -> torch.Tensor:
    """The logits tensor of an engine output: a tensor, a one-element list/tuple, or an object with ``logits``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"engine returned {type(out).__name__}, expected a logits tensor")


@dataclass
class Engine:
    """A logits function and its constraints. ``batch_size``/``side``: the static batch and input side of a
    compiled engine (None: any); ``autocast``: run an eager model under ``torch.autocast(precision)``;
    ``prior``: a cascade's stage-1 engine, whose logits this one's inputs and outputs build on; ``tail``: the same
    network at a smaller static batch, which runs the remainder of a batch instead of padding it."""

    fn: Callable[[torch.Tensor], object]
    backend: str = "eager"  # eager | aot_inductor | tensorrt (see evaluator.backends)
    precision: str = "fp32"  # fp32 | fp16 | bf16
    device: str = "cpu"
    batch_size: int | None = None
    side: int | None = None
    autocast: bool = False
    path: Path | None = None
    prior: "Engine | None" = None
    tail: "Engine | None" = None

    @property
    def name(self) -> str:
        return f"{self.backend}_{'autocast_' if self.autocast else ''}{self.precision}"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast:
            ctx = torch.autocast(torch.device(self.device).type, dtype=DTYPES[self.precision])
        else:
            ctx = contextlib.nullcontext()
            x = x.to(DTYPES[self.precision])
        with torch.inference_mode(), ctx:
            out = as_logits(self.fn(x))
        # A compiled engine may return channels-last logits; upsampling keeps that layout and makes every later
        # per-class step strided and slow, so the layout is fixed here, once.
        return out.float().contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, h, w) float32 normalised -> (B, 29, h', w') float32 contiguous logits on the engine's device."""
        x = x.to(self.device)
        if self.side is not None and tuple(x.shape[-2:]) != (self.side, self.side):
            raise HandSegError(f"{self.name} engine takes {self.side}x{self.side} tiles, got {tuple(x.shape[-2:])}")
        b = self.batch_size
        if b is None or x.shape[0] == b:
            return self._run(x)
        outs = []
        for start in range(0, x.shape[0], b):
            chunk = x[start:start + b]
            n = chunk.shape[0]
            if n < b and self.tail is not None:  # the remainder on the smaller engine: nothing is padded
                outs.append(self.tail(chunk))
                continue
            if n < b:
                chunk = torch.cat([chunk, chunk.new_zeros((b - n, *chunk.shape[1:]))])
            outs.append(self._run(chunk)[:n])
        return torch.cat(outs)


def eager_engine(model: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu",
                 prior: nn.Module | None = None) -> Engine:
    """A Hugging Face segmentation model as an engine (put in eval mode); fp16/bf16 run under autocast with
    fp32 weights. ``prior``: a cascade's stage-1 model."""
    module = LogitsModule(model).eval().to(device)
    return Engine(fn=module, backend="eager", precision=precision, device=str(device), autocast=precision != "fp32",
                  prior=None if prior is None else eager_engine(prior, precision, device))
