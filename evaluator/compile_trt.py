"""Torch-TensorRT (dynamo path): compile an exported program into a TensorRT-backed exported program.

Optional: ``torch_tensorrt`` is imported lazily, so the rest of the evaluator works without it. Current
Torch-TensorRT releases are strongly typed (``use_explicit_typing=True``): the engine runs in the dtypes of the
exported graph, so fp16/bf16 engines come from a model and input cast before export (see ``export.py``); the old
``enabled_precisions`` option is not used.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import torch

from handseg.runtime.atomic import atomic_path


def tensorrt_missing(device: str) -> str | None:
    """What prevents TensorRT here (None when it can run)."""
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not installed (pip install -e .[tensorrt])"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    if not device.startswith("cuda"):
        return f"device is {device!r}, TensorRT needs a CUDA device (cuda:0)"
    return None


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
    """Load a saved Torch-TensorRT exported program; returns a callable module."""
    return _torch_tensorrt().load(str(path)).module()
