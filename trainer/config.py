"""The training YAML: one typed schema for both stages, validated before any work starts.

``load_train_config(path)`` returns a :class:`TrainConfig` or raises :class:`~handseg.errors.ConfigError`
naming the file and the dotted key (unknown or misspelt key, wrong type, missing ``data.data_root``, a
stage-2 ``ckpt`` that is missing or was trained for other classes or another architecture).
See ``config/train_stage1.yaml`` for every key with a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from handseg.checkpoint import read_info
from handseg.config_schema import load_config, to_dict
from handseg.errors import ConfigError, DataFormatError
from handseg.models import InputSpec, ModelConfig
from trainer.data import PHANTOM_HINT, DataConfig
from trainer.ema import EMAConfig
from trainer.losses import LossConfig
from trainer.optim import OptimConfig, ScheduleConfig



@dataclass
class LoggingConfig:
    """Accelerate trackers (``tensorboard`` writes under ``<output_dir>/logs``; ``wandb`` needs the package)
    and how often (optimiser steps) loss, lr and throughput are logged."""

    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    log_every: int = 10
    project: str = "handseg"

    def validate(self) -> None:
        if self.log_every < 1:
            raise ValueError(f"log_every: must be >= 1, got {self.log_every}")


@dataclass
class ValConfig:
    """Validation inference: the same settings the evaluator uses. ``overlap`` and ``blend`` matter for
    stage 2 (tiles); ``max_images`` caps the fold (None = all images)."""

    batch_size: int = 4
    overlap: float = 0.25
    blend: Literal["gaussian", "constant"] = "gaussian"
    threshold: float = 0.5
    max_images: int | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap: must be in [0, 1), got {self.overlap}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold: must be in (0, 1), got {self.threshold}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images: must be >= 1, got {self.max_images}")


@dataclass
class TrainConfig:
    """One training stage. Stage 1: whole images resized to ``data.image_size``; stage 2: ``data.crop_size``
    crops at native resolution, initialised from ``ckpt`` (stage 1's ``best/``)."""

    run_name: str
    data: DataConfig
    stage: Literal[1, 2] = 1
    output_dir: Path | None = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = 1.0
    ema: EMAConfig = field(default_factory=EMAConfig)
    val_every: int = 1
    val: ValConfig = field(default_factory=ValConfig)
    early_stopping_patience: int | None = None
    ckpt: Path | None = None
    resume: bool = False
    accelerate_config: Path | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    max_train_steps_per_epoch: int | None = None
    dryrun_steps: int = 2

    def validate(self) -> None:
        if isinstance(self.stage, bool):
            raise ValueError(f"stage: must be 1 or 2, got {self.stage!r}")
        if not self.run_name or "/" in self.run_name:
            raise ValueError(f"run_name: must be a non-empty name without '/', got {self.run_name!r}")
        for key in ("epochs", "grad_accum_steps", "val_every", "dryrun_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm: must be > 0 or null, got {self.clip_grad_norm}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience: must be >= 1 or null, got {self.early_stopping_patience}")
        if self.max_train_steps_per_epoch is not None and self.max_train_steps_per_epoch < 1:
            raise ValueError(f"max_train_steps_per_epoch: must be >= 1 or null, got {self.max_train_steps_per_epoch}")
        root = Path(self.data.data_root)
        if not root.is_dir():
            raise ValueError(f"data.data_root: folder {root} not found; {PHANTOM_HINT}")
        if self.output_dir is None:
            self.output_dir = Path("runs") / self.run_name
        if self.accelerate_config is not None and not Path(self.accelerate_config).is_file():
            raise ValueError(f"accelerate_config: file {self.accelerate_config} not found")
        if self.stage == 2 and self.ckpt is None:
            raise ValueError("ckpt: stage 2 starts from stage 1's best checkpoint; set ckpt: runs/<stage-1 run>/best")
        if self.ckpt is not None:
            problem = checkpoint_problem(Path(self.ckpt), self.model)
            if problem:
                raise ValueError(f"ckpt: {problem}")


def checkpoint_problem(folder: Path, model: ModelConfig) -> str | None:
    """Why the checkpoint ``folder`` cannot initialise ``model`` (None when it can), read from its
    ``handseg.json`` without loading any weights."""
    if not folder.is_dir():
        return f"checkpoint folder {folder} not found (train stage 1 first, or point ckpt at its best/ folder)"
    try:
        info = read_info(folder)
    except DataFormatError as exc:
        return f"not a usable checkpoint: {exc}"
    saved = info.get("model") or {}
    for key in ("arch", "preset"):
        if saved.get(key) != getattr(model, key):
            return (
                f"{folder} holds a {saved.get('arch')}/{saved.get('preset')} model but model is "
                f"{model.arch}/{model.preset}"
            )
    if (saved.get("overrides") or {}) != (model.overrides or {}):
        return f"{folder} was built with model.overrides {saved.get('overrides')}, config has {model.overrides}"
    return None


def load_train_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read and validate a training YAML (``overrides``: nested dict merged on top, for tests and sweeps)."""
    try:
        return load_config(path, TrainConfig, overrides=overrides)
    except ValueError as exc:  # a sub-config that validates in __post_init__ raises before the loader can
        sub, sep, problem = str(exc).partition(": ")
        key = sub if sep and " " not in sub else "<root>"
        raise ConfigError(path, key, problem if key != "<root>" else str(exc)) from None


def input_spec(cfg: TrainConfig) -> InputSpec:
    """How this stage's model sees images; stored in every checkpoint and used by validation.

    Stage 1: the whole image resized to ``data.image_size``. Stage 2: native-resolution tiles of
    ``data.crop_size`` with ``val.overlap``.
    """
    if cfg.stage == 1:
        size = cfg.data.image_size
        return InputSpec(mode="resize", image_size=size, tile_size=size, overlap=cfg.val.overlap)
    return InputSpec(mode="tile", image_size=cfg.data.crop_size, tile_size=cfg.data.crop_size, overlap=cfg.val.overlap)


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved config as plain data (what checkpoints record and trackers log)."""
    return to_dict(cfg)
