"""Which evaluation configs have a trained checkpoint here: the hint a missing checkpoint's error ends with.

``python predict.py x.png`` reads ``config/eval.yaml``, whose checkpoint is a GPU training run that a newcomer
has not made; after ``make demo`` the demo's config has one. The error then names it:
``config/eval.yaml: checkpoint: folder not found: runs/stage2/best; configs whose checkpoints exist here:
--cfg-path config/demo/eval.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

CONFIG_DIRS = ("config", "config/demo")  # relative to the working directory, like the checkpoint paths


def config_checkpoints(path: Path) -> list[str] | None:
    """The checkpoint folder(s) an evaluation YAML names, or None for another or unreadable file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    ckpt = data.get("checkpoint") if isinstance(data, dict) else None
    if isinstance(ckpt, str):
        return [ckpt]
    if isinstance(ckpt, list) and ckpt and all(isinstance(c, str) for c in ckpt):
        return ckpt
    return None


def configs_with_checkpoints(skip: str | os.PathLike | None = None) -> list[str]:
    """``config/*.yaml`` and ``config/demo/*.yaml`` whose every checkpoint folder exists (``skip`` left out)."""
    skipped = Path(skip).resolve() if skip else None
    found = []
    for folder in CONFIG_DIRS:
        for path in sorted(Path(folder).glob("*.yaml")):
            ckpts = config_checkpoints(path)
            if ckpts and path.resolve() != skipped and all(Path(c).is_dir() for c in ckpts):
                found.append(path.as_posix())
    return found


def missing_checkpoint_hint(skip: str | os.PathLike | None = None) -> str:
    """``"; configs whose checkpoints exist here: --cfg-path A or --cfg-path B"``, or how to get one."""
    found = configs_with_checkpoints(skip)
    if found:
        return "; configs whose checkpoints exist here: " + " or ".join(f"--cfg-path {p}" for p in found)
    return "; no config under config/ has a trained checkpoint here yet (`make demo` trains config/demo/eval.yaml's)"
