"""The one table of engine backends: name, engine file suffix, availability, compile and load.

Everything that names a backend (the eval config, the command-line choices, engine paths, the efficiency
benchmark) reads :data:`BACKENDS`, so a new backend (say ONNX Runtime) is one entry here plus its compile/load
module. ``auto`` picks the first available of :data:`AUTO_ORDER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evaluator import compile_aoti, compile_trt
from handseg.runtime.errors import HandSegError


class BackendUnavailableError(HandSegError):
    """The requested backend cannot run on this machine."""


@dataclass(frozen=True)
class Backend:
    """``missing(device)`` says why the backend cannot run there (None: it can). ``compile(exported, example,
    out_path, device, optimization_level)`` writes an engine file; ``load(path, device)`` returns a callable.
    Eager has no engine file (``suffix``, ``compile`` and ``load`` are None)."""

    name: str
    suffix: str | None
    missing: Callable[[str], str | None]
    compile: Callable[..., Path] | None = None
    load: Callable[[Path, str], Callable[[torch.Tensor], object]] | None = None

    @property
    def compiled(self) -> bool:
        return self.suffix is not None


BACKENDS: dict[str, Backend] = {
    "eager": Backend("eager", None, lambda device: None),
    "aot_inductor": Backend("aot_inductor", ".pt2", compile_aoti.aoti_missing, compile_aoti.compile_aoti,
                            compile_aoti.load_aoti),
    "tensorrt": Backend("tensorrt", ".ep", compile_trt.tensorrt_missing, compile_trt.compile_trt,
                        compile_trt.load_trt),
}
AUTO_ORDER = ("tensorrt", "aot_inductor")
BACKEND_CHOICES = (*BACKENDS, "auto")
COMPILED = tuple(name for name, b in BACKENDS.items() if b.compiled)


def resolve_backend(name: str, device: str) -> str:
    """``auto`` -> the first backend of :data:`AUTO_ORDER` that can run on ``device``; other names unchanged."""
    if name != "auto":
        return name
    return next(n for n in AUTO_ORDER if BACKENDS[n].missing(device) is None)


def require(name: str, device: str) -> Backend:
    """The backend called ``name``, or a one-line error saying what is missing (suggesting AOTInductor)."""
    backend = BACKENDS[name]
    missing = backend.missing(device)
    if missing:
        raise BackendUnavailableError(f"backend {name} cannot run: {missing}; use --backend aot_inductor instead")
    return backend
