"""The one table of engine backends: name, engine file suffix, availability, compile and load.

Everything that names a backend (the eval config, the command-line choices, engine paths, the efficiency
benchmark) reads :data:`BACKENDS`, so a new backend (say ONNX Runtime) is one entry here plus its compile/load
module. ``auto`` picks the first available of :data:`AUTO_ORDER`.
"""

from __future__ import annotations

import sys
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


def available(device: str) -> list[str]:
    """The backends of :data:`AUTO_ORDER` that can run on ``device``, in that order. On a CUDA device, a backend
    passed over (e.g. TensorRT not installed, or an install that does not import) is said once per process on
    stderr, with why: ``auto`` never falls back without a word where a GPU was asked for."""
    names = []
    for name in AUTO_ORDER:
        missing = BACKENDS[name].missing(device)
        if missing is None:
            names.append(name)
        elif device.startswith("cuda") and (name, missing) not in _SAID:
            _SAID.add((name, missing))
            print(f"backend auto: {name} cannot run ({missing}); trying the next", file=sys.stderr, flush=True)
    return names


_SAID: set[tuple[str, str]] = set()


def resolve_backend(name: str, device: str) -> str:
    """``auto`` -> the first backend of :data:`AUTO_ORDER` that can run on ``device``; other names unchanged."""
    if name != "auto":
        return name
    names = available(device)
    if not names:
        raise BackendUnavailableError(f"no backend can run on {device}: {BACKENDS[AUTO_ORDER[-1]].missing(device)}")
    return names[0]


def require(name: str, device: str) -> Backend:
    """The backend called ``name``, or a one-line error saying what is missing (suggesting AOTInductor)."""
    backend = BACKENDS[name]
    missing = backend.missing(device)
    if missing:
        raise BackendUnavailableError(f"backend {name} cannot run: {missing}; use --backend aot_inductor instead")
    return backend
