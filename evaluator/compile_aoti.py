"""AOTInductor: compile an exported program into a self-contained ``.pt2`` package (CPU or CUDA)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def compile_aoti(exported: torch.export.ExportedProgram, out_path: str | Path) -> Path:
    """Compile and package ``exported`` to ``out_path`` (.pt2), written atomically (temp name, then rename)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".pt2", dir=out_path.parent)
    os.close(fd)
    try:
        torch._inductor.aoti_compile_and_package(exported, package_path=tmp)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_path


def load_aoti(path: str | Path, device: str = "cpu"):
    """Load a ``.pt2`` package; returns a callable taking the exported input tensor(s)."""
    index = int(device.split(":")[1]) if device.startswith("cuda:") else -1
    return torch._inductor.aoti_load_package(str(path), device_index=index)
