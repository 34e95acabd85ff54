"""Tiny training configs on the phantom fixture, runners for the training command (a subprocess, or its ``main`` in
the test process), and the shared tiny run."""

from __future__ import annotations

import functools
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from tests.commands import run_main

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


def train_here(cfg_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The training command's ``main`` in this process, with what :func:`run_train` gives back (exit code, stdout,
    stderr), for a run whose process is not what the test is about: a tiny run costs about 0.5 s of CPU here against
    7 s in a new Python that imports torch, and ends with the same weights bit for bit. Accelerate's process state,
    the global generators and torch's thread count are left as they were."""
    from accelerate.state import AcceleratorState

    from trainer import train

    generators = random.getstate(), np.random.get_state(), torch.get_rng_state()
    threads = torch.get_num_threads()
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return run_main(train.main, "--cfg-path", cfg_path, *extra)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.set_rng_state(generators[2])
        torch.set_num_threads(threads)


# The shared run's model: the head starts at bias 0 (no ``prior_prob``), so with a small learning rate the predicted
# masks stay large and overlap the bones, and Dice values compared between two code paths are not all the value of
# an empty mask.
TINY_RUN_MODEL = {"arch": "segformer", "preset": "test", "prior_prob": None}


class TinyRun:
    """One tiny training run shared by the tests that need a trained checkpoint (the session fixture ``tiny_run``),
    each stage trained by the training command (:func:`train_here`) on first use, in ``root``:

    - ``stage1``: 2 epochs on whole images at 128 px (6 training, 2 validation images; lr 1e-5);
    - ``stage2``: fine-tuned from ``stage1/best`` on 128 px native crops, 2 steps at lr 1e-9 (its weights are
      stage 1's to ~1e-9);
    - ``cascade``: a cascade's stage 2 from ``stage1/best``, one epoch at lr 1e-3 (the refiner moves off zero, so
      both parts matter).

    Each property is the run's output folder (``best/``, ``last/``, ``validation/``, ``state/``, ``logs/``); its
    config is :meth:`config_path`. Tests read these folders and never write into them."""

    def __init__(self, data_root: Path, root: Path):
        self.data_root, self.root = data_root, root

    def config(self, name: str) -> dict:
        """The raw config of run ``name`` (``stage1``, ``stage2`` or ``cascade``)."""
        out = self.root / name
        if name == "stage1":
            return tiny_config(self.data_root, out, model=TINY_RUN_MODEL, optim={"lr": 1e-5})
        best = str(self.root / "stage1" / "best")
        if name == "stage2":
            return tiny_config(self.data_root, out, stage=2, ckpt=best, epochs=1, max_train_steps_per_epoch=2,
                               model=TINY_RUN_MODEL, optim={"lr": 1e-9})
        return tiny_config(self.data_root, out, stage=2, ckpt=best, cascade=True, epochs=1, model=TINY_RUN_MODEL,
                           optim={"lr": 1e-3})

    def config_path(self, name: str) -> Path:
        return self.root / f"{name}.yaml"

    def _train(self, name: str) -> Path:
        proc = train_here(write_yaml(self.config_path(name), self.config(name)))
        assert proc.returncode == 0, proc.stderr[-3000:]
        return self.root / name

    @functools.cached_property
    def stage1(self) -> Path:
        return self._train("stage1")

    @functools.cached_property
    def stage2(self) -> Path:
        self.stage1  # trained first: stage 2 starts from its best
        return self._train("stage2")

    @functools.cached_property
    def cascade(self) -> Path:
        self.stage1
        return self._train("cascade")
