"""Tiny training configs on the phantom fixture, and a runner for the training command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


def tiny_config(root: Path, out: Path, stage: int = 1, **overrides) -> dict:
    """A stage config on the 256 px phantom (8 images, 4 persons): `test` SegFormer, 128 px input or crops,
    fold 0 of 4 (6 training and 2 validation images), 2 epochs, batch 2."""
    cfg = {
        "run_name": f"tiny_stage{stage}",
        "output_dir": str(out),
        "stage": stage,
        "seed": 0,
        "model": {"arch": "segformer", "preset": "test"},
        "data": {"data_root": str(root), "n_folds": 4, "fold": 0, "image_size": 128, "crop_size": 128,
                 "crops_per_image": 1, "batch_size": 2, "num_workers": 0, "cache_dir": str(out.parent / "cache"),
                 "augmentations": [{"name": "HorizontalFlip", "p": 0.5}]},
        "optim": {"lr": 0.002},
        "schedule": {"name": "cosine", "warmup_steps": 1},
        "epochs": 2,
        "val": {"batch_size": 4},
        "logging": {"log_every": 1},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def write_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_train(cfg_path: Path, *extra: str, env: dict | None = None, launcher: list[str] | None = None,
              timeout: int = 240) -> subprocess.CompletedProcess:
    """Run the training command in a subprocess (one intra-op thread), from the repository root."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = (launcher or [sys.executable]) + ["-m", "trainer.train", "--cfg-path", str(cfg_path), *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
