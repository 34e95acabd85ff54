"""The training YAML: one typed schema for both stages, checked before any work starts.

Two explicit steps, both raising :class:`~handseg.runtime.errors.ConfigError` naming the file and the dotted key:
``load_train_config(path)`` reads and checks values (unknown or misspelt key, wrong type, bad value) without
touching anything else (also that the stage's input side, ``data.image_size`` or ``data.crop_size``, is a multiple
of the model's size divisor, as deployment needs); :func:`check_paths` then checks what the config points at on
disk (``data.data_root``, ``accelerate_config``, a stage-2 ``ckpt`` that is missing or was trained for another
model, a ``crop_size`` larger than the images).
See ``config/train_stage1.yaml`` for every key with a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import PHANTOM_HINT
from handseg.data.image_io import read_image_size
from handseg.model.checkpoint import read_info
from handseg.model.intensity import Intensity
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig, size_divisor
from handseg.runtime.config_schema import FieldError, load_config
from handseg.runtime.errors import ConfigError, DataFormatError
from trainer.ema import EMAConfig
from trainer.losses import LossConfig
from trainer.optim import OptimConfig, ScheduleConfig
from trainer.transforms import build_transforms


@dataclass
class LoggingConfig:
    """Accelerate trackers (``tensorboard`` writes under ``<output_dir>/logs/<project>``; ``wandb`` needs the
    package and files the run as ``run_name`` in ``project``) and how often (optimiser steps) loss, lr and
    throughput are logged."""

    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    log_every: int = 10
    project: str = "handseg"

    def check(self) -> None:
        if self.log_every < 1:
            raise FieldError("log_every", f"must be >= 1, got {self.log_every}")
        if not self.project.strip():
            raise FieldError("project", "must be a non-empty name")


@dataclass
class ValConfig:
    """Validation inference: the same settings the evaluator uses. ``overlap`` and ``blend`` matter for
    stage 2 (tiles); ``max_images`` caps the fold (None = all images)."""

    batch_size: int = 4
    overlap: float = 0.25
    blend: Literal["gaussian", "constant"] = "gaussian"
    threshold: float = 0.5
    max_images: int | None = None

    def check(self) -> None:
        if self.batch_size < 1:
            raise FieldError("batch_size", f"must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise FieldError("overlap", f"must be in [0, 1), got {self.overlap}")
        if not 0.0 < self.threshold < 1.0:
            raise FieldError("threshold", f"must be in (0, 1), got {self.threshold}")
        if self.max_images is not None and self.max_images < 1:
            raise FieldError("max_images", f"must be >= 1, got {self.max_images}")


@dataclass
class TrainConfig:
    """One training stage. Stage 1: whole images resized to ``data.image_size``; stage 2: ``data.crop_size``
    crops at native resolution, initialised from ``ckpt`` (stage 1's ``best/``). ``intensity``: the per-image
    intensity standardisation of the model's input (recorded in its input spec; :mod:`handseg.model.intensity`)."""

    run_name: str
    data: DataConfig
    stage: Literal[1, 2] = 1
    output_dir: Path | None = None
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    intensity: Intensity = field(default_factory=Intensity)
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
    cascade: bool = False
    resume: bool = False
    accelerate_config: Path | None = None
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    max_train_steps_per_epoch: int | None = None
    dryrun_steps: int = 2

    @property
    def run_dir(self) -> Path:
        """Where the run writes: ``output_dir``, or ``runs/<run_name>`` when it is not set."""
        return Path(self.output_dir) if self.output_dir is not None else Path("runs") / self.run_name

    def check(self) -> None:
        if isinstance(self.stage, bool):
            raise FieldError("stage", f"must be 1 or 2, got {self.stage!r}")
        if not self.run_name or "/" in self.run_name:
            raise FieldError("run_name", f"must be a non-empty name without '/', got {self.run_name!r}")
        for key in ("epochs", "grad_accum_steps", "val_every", "dryrun_steps"):
            if getattr(self, key) < 1:
                raise FieldError(key, f"must be >= 1, got {getattr(self, key)}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise FieldError("clip_grad_norm", f"must be > 0 or null, got {self.clip_grad_norm}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise FieldError("early_stopping_patience", f"must be >= 1 or null, got {self.early_stopping_patience}")
        if self.max_train_steps_per_epoch is not None and self.max_train_steps_per_epoch < 1:
            raise FieldError("max_train_steps_per_epoch", f"must be >= 1 or null, got {self.max_train_steps_per_epoch}")
        if self.stage == 2 and self.ckpt is None:
            raise FieldError("ckpt", "stage 2 starts from stage 1's best checkpoint; set ckpt: runs/<stage-1 run>/best")
        if self.cascade and self.stage != 2:
            raise FieldError("cascade", "a cascade is a stage-2 recipe (stage 2 sees stage 1's probabilities)")
        try:  # checked here, not by DataConfig: reading a checkpoint's data section must not need albumentations
            build_transforms(self.data.augmentations)
        except ConfigError as exc:  # keyed augmentations[i].<arg>; the loader adds the file
            raise FieldError(f"data.{exc.key}", exc.problem) from None
        side_key = "image_size" if self.stage == 1 else "crop_size"  # the stage's model input side
        side, divisor = getattr(self.data, side_key), size_divisor(self.model)
        if side % divisor:
            lo, hi = side // divisor * divisor, (side // divisor + 1) * divisor
            raise FieldError(f"data.{side_key}", f"{side} is not a multiple of {divisor}, the {self.model.arch} "
                                                 f"model's size divisor (try {lo or hi} or {hi}): its checkpoint "
                                                 "could not be compiled to an engine")


def check_paths(cfg: TrainConfig, file: str | Path) -> None:
    """Check what the config points at on disk; ConfigError naming ``file`` and the key. Reads no weights."""
    root = Path(cfg.data.data_root)
    if not root.is_dir():
        raise ConfigError(file, "data.data_root", f"folder {root} not found; {PHANTOM_HINT}")
    if cfg.accelerate_config is not None and not Path(cfg.accelerate_config).is_file():
        raise ConfigError(file, "accelerate_config", f"file {cfg.accelerate_config} not found")
    if cfg.ckpt is not None:
        problem = checkpoint_problem(Path(cfg.ckpt), cfg.model)
        if problem:
            raise ConfigError(file, "ckpt", problem)
        if cfg.cascade and read_info(cfg.ckpt).get("input", {}).get("mode") != "resize":
            raise ConfigError(file, "cascade", f"{cfg.ckpt} is not a stage-1 (whole-image) checkpoint")
    if cfg.stage == 2:
        check_crop_size(cfg.data.crop_size, root, file)


def check_crop_size(crop_size: int, root: Path, file: str | Path) -> None:
    """Stage 2's crops must fit in the images: compared with the size of the first training PNG (its header only;
    a data set normally has one image size)."""
    first = next(iter(sorted((root / "train" / "DCM").rglob("*.png"))), None)
    if first is None:
        return  # no training images: the data index says so, naming the folder
    try:
        h, w = read_image_size(first)
    except DataFormatError:
        return  # an unreadable PNG is reported, with its name, when the data is read
    if crop_size > min(h, w):
        raise ConfigError(file, "data.crop_size", f"{crop_size} is larger than the training images ({w}x{h}, e.g. "
                                                  f"{first}); use at most {min(h, w)}")


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


def load_train_config(path: str | Path, overrides: dict | None = None, sets: Sequence[str] = ()) -> TrainConfig:
    """Read and check a training YAML (``overrides``: nested dict merged on top, for tests and sweeps; ``sets``: the
    command line's ``--set key.sub=value`` strings)."""
    return load_config(path, TrainConfig, overrides=overrides, sets=sets)


def input_spec(cfg: TrainConfig, prior: InputSpec | None = None) -> InputSpec:
    """How this stage's model sees images; stored in every checkpoint and used by validation.

    Stage 1: the whole image resized to ``data.image_size``. Stage 2: native-resolution tiles of
    ``data.crop_size`` with ``val.overlap``; a cascade's stage 2 also sees its stage 1 as that one was trained
    (``prior``, the stage-1 checkpoint's input spec).
    """
    if cfg.stage == 1:
        size = cfg.data.image_size
        return InputSpec(mode="resize", image_size=size, tile_size=size, overlap=cfg.val.overlap,
                         intensity=cfg.intensity)
    return InputSpec(mode="tile", image_size=cfg.data.crop_size, tile_size=cfg.data.crop_size, overlap=cfg.val.overlap,
                     prior=prior if cfg.cascade else None, intensity=cfg.intensity)
