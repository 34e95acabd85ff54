"""AOTInductor: compile an exported program into a self-contained ``.pt2`` package (CPU or CUDA)."""

from __future__ import annotations

from pathlib import Path

import torch

from handseg.atomic import atomic_path


def aoti_missing(device: str) -> str | None:
    """What prevents AOTInductor on ``device`` (None: it runs on the CPU and on any CUDA device)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def compile_aoti(exported: torch.export.ExportedProgram, example: torch.Tensor | None, out_path: str | Path,
                 device: str = "cpu", optimization_level: int | None = None) -> Path:
    """Compile and package ``exported`` to ``out_path`` (.pt2), written atomically (temp name, then rename).
    ``example``, ``device`` and ``optimization_level`` are part of the backend interface; AOTInductor takes
    shapes and device from the exported program."""
    out_path = Path(out_path)
    with atomic_path(out_path, suffix=".pt2") as tmp:
        torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
    return out_path


def load_aoti(path: str | Path, device: str = "cpu"):
    """Load a ``.pt2`` package; returns a callable taking the exported input tensor(s)."""
    index = int(device.split(":")[1]) if device.startswith("cuda:") else -1
    return torch._inductor.aoti_load_package(str(path), device_index=index)
