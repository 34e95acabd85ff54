"""AOTInductor: compile an exported program into a self-contained ``.pt2`` package (CPU or CUDA)."""

from __future__ import annotations

from pathlib import Path

import torch

from handseg.runtime.atomic import atomic_path


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


class AOTIPackage:
    """A loaded ``.pt2`` package called with one input tensor; returns the list of its output tensors.

    It holds torch's C++ package loader directly: ``torch._inductor.aoti_load_package`` would import the Python
    side of Inductor (sympy, dynamo; about 180 MiB of resident memory) only to wrap the same loader."""

    def __init__(self, path: str | Path, device_index: int = -1):
        self.loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, device_index)

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: the exported input (B, C, side, side) -> [logits (B, 29, h', w')]."""
        return self.loader.boxed_run([x])


def load_aoti(path: str | Path, device: str = "cpu"):
    """Load a ``.pt2`` package; returns a callable taking the exported input tensor. Uses the C++ loader
    (:class:`AOTIPackage`) where this torch has it, ``torch._inductor.aoti_load_package`` otherwise."""
    index = int(device.split(":")[1]) if device.startswith("cuda:") else -1
    if hasattr(torch._C, "_aoti") and hasattr(torch._C._aoti, "AOTIModelPackageLoader"):
        return AOTIPackage(path, index)
    return torch._inductor.aoti_load_package(str(path), device_index=index)
