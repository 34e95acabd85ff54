"""Torch-TensorRT (dynamo path): compile an exported program into a TensorRT-backed exported program.

Optional: ``torch_tensorrt`` is imported lazily, so the rest of the evaluator works without it, and a broken
install (an import that fails, e.g. TensorRT's libraries missing, or a build for another torch) is reported as
what is missing rather than a crash (``backend: auto`` then uses AOTInductor and says why). Current
Torch-TensorRT releases are strongly typed (``use_explicit_typing=True``): the engine runs in the dtypes of the
exported graph, so fp16/bf16 engines come from a model and input cast before export (see ``export.py``); the old
``enabled_precisions`` option is not used.

Devices: a TensorRT engine is bound to a GPU when it is deserialised; Torch-TensorRT's runtime puts it on the
process's current CUDA device when that one can run it (same compute capability), else on the device it was
built on. :func:`load_trt` therefore loads with the target device current, and moves what the program keeps
outside its engines (weights of operators left to PyTorch, devices written into the graph) with
``torch.export.passes.move_to_device_pass``: an engine built on ``cuda:0`` runs on each evaluation process's own
GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import torch

from handseg.runtime.atomic import atomic_path


def tensorrt_missing(device: str) -> str | None:
    """What prevents TensorRT here (None when it can run). Imports torch_tensorrt (once it can matter: a CUDA
    device is asked for and usable), so that a broken install is found here and not halfway through a compile."""
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not installed (pip install -e .[tensorrt])"
    if not device.startswith("cuda"):
        return f"device is {device!r}, TensorRT needs a CUDA device (cuda:0)"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    try:
        trt = _torch_tensorrt()
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (a missing libnvinfer), RuntimeError, ...
        return f"torch_tensorrt does not import ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
    built_for, running = _minor(getattr(trt, "__version__", "")), _minor(torch.__version__)
    if built_for and built_for != running:
        return (f"torch_tensorrt {trt.__version__} is built for torch {built_for}, this is torch {torch.__version__} "
                f"(pip install 'torch-tensorrt=={running}.*')")
    return None


def _minor(version: str) -> str:
    """``2.14`` of ``2.14.1+cu130``; empty when there is no version."""
    parts = version.split("+")[0].split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else ""


def _torch_tensorrt():
    """The torch_tensorrt module (imported only here: optional; ``evaluator.backends.require`` checks first)."""
    return importlib.import_module("torch_tensorrt")


def compile_trt(
    exported: torch.export.ExportedProgram,
    example: torch.Tensor,
    out_path: str | Path,
    device: str = "cuda:0",
    optimization_level: int | None = 3,
) -> Path:
    """Compile with ``torch_tensorrt.dynamo.compile`` (static shape of ``example``) and save as an exported program.

    example: (B, 3, side, side) tensor on the CUDA device, in the engine dtype.
    """
    trt = _torch_tensorrt()
    out_path = Path(out_path)
    module = trt.dynamo.compile(
        exported,
        arg_inputs=[example],
        device=torch.device(device),
        use_explicit_typing=True,
        optimization_level=3 if optimization_level is None else optimization_level,
        min_block_size=1,
    )
    with atomic_path(out_path, suffix=".ep") as tmp:
        trt.save(module, str(tmp), output_format="exported_program", arg_inputs=[example])
    return out_path


def load_trt(path: str | Path, device: str = "cuda:0"):
    """Load a saved Torch-TensorRT exported program onto ``device`` (any GPU of the kind it was built on; see the
    module docstring); returns a callable module."""
    from torch.export.passes import move_to_device_pass

    trt = _torch_tensorrt()
    target = torch.device(device)
    with torch.cuda.device(target):  # the engines are deserialised onto the current device
        program = trt.load(str(path))
    return move_to_device_pass(program, str(target)).module()
