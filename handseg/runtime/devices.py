"""Whether the GPUs a config asks for are usable here, and the one line that says what a run runs on.

A config that asks for a GPU (an Accelerate config without ``use_cpu: true``, an eval config with
``device: cuda...``) on a machine where CUDA is not usable stops before any work with one line that says so and how
to run on the CPU anyway. Not usable: no GPU, no driver, or a driver older than this torch build needs (then
``torch.cuda.is_available()`` is False, with a warning that says why). Nothing falls back to the CPU silently.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from handseg.runtime.errors import ConfigError, HandSegError

CPU_ACCELERATE_HINT = "to run on the CPU anyway: --set accelerate_config=config/accelerate/cpu.yaml"
CPU_DEVICE_HINT = "to run on the CPU anyway: --set device=cpu --set precision=fp32"


def cuda_problem() -> str | None:
    """Why CUDA cannot be used in this process (None: it can)."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    if usable:
        return None
    said = next((" ".join(str(w.message).split()) for w in caught if "CUDA" in str(w.message)), "")
    reason = f": {said[:200]}" if said else ": no GPU, or a driver older than this build needs"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable CUDA device{reason}"


def require_gpus(count: int, file: str | Path, key: str, hint: str) -> None:
    """``count`` CUDA devices must be usable, else a ConfigError naming ``file`` and ``key`` with ``hint``."""
    problem = cuda_problem()
    if problem is None and torch.cuda.device_count() < count:
        problem = f"it asks for {count} GPUs, {torch.cuda.device_count()} visible"
    if problem is not None:
        raise ConfigError(file, key, f"a GPU config, but {problem}; {hint}")


def require_device(device: str, file: str | Path, key: str = "device", hint: str = CPU_DEVICE_HINT) -> None:
    """``device`` (``cpu``, ``cuda`` or ``cuda:N``) must exist here; ConfigError naming ``key`` otherwise."""
    if device == "cpu":
        return
    index = int(device.split(":")[1]) if ":" in device else 0
    require_gpus(index + 1, file, key, hint)


def require_launched_device(device: torch.device) -> None:
    """A process that ``accelerate launch`` started with a GPU config (it sets ``ACCELERATE_USE_CPU=False``) but
    that landed on the CPU stops with one line (the launch scripts check before launching; this catches a direct
    ``accelerate launch``)."""
    if os.environ.get("ACCELERATE_USE_CPU") == "False" and torch.device(device).type == "cpu":
        problem = cuda_problem() or "it runs on the CPU"
        raise HandSegError(f"launched with a GPU Accelerate config (use_cpu: false), but {problem}; "
                           f"{CPU_ACCELERATE_HINT}")


def device_label(device: str | torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def start_line(devices: list[str], precision: str, batch: int, accumulation: int | None = None,
               what: str = "images") -> str:
    """The one line a run prints at start: its devices, world size, precision and effective batch (per-process
    batch x processes, x accumulation steps for training). ``devices``: one label per process, in rank order."""
    world = len(devices)
    shown = devices[0] if world == 1 else ", ".join(devices)
    steps = "" if accumulation is None else f" x {accumulation} accumulation step(s)"
    total = batch * world * (accumulation or 1)
    return (f"start: device {shown} | world size {world} | mixed precision {precision} | effective batch {batch} "
            f"{what} x {world} process(es){steps} = {total}")
