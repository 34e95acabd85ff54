"""What a run writes to disk: ``best/`` and ``last/`` model folders and the resumable Accelerate state.

Layout of ``<output_dir>``::

    best/   last/     Hugging Face folders (config.json, model.safetensors) + handseg.json (the run's record)
                      + README.md (the model card, handseg.model_card)
    state/            accelerator.save_state: model, optimiser, sampler, RNG of every process, and the
                      registered progress counters, schedule and EMA (for ``resume: true``)
    validation/       per-epoch per-image Dice (JSON) written by the main process
    config.yaml       the resolved config

Model folders are written atomically by :func:`handseg.checkpoint.save_checkpoint`; the state folder is
written next to the old one and swapped in, so a crash mid-save leaves the previous state usable.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from torch import nn

from handseg.atomic import atomic_write_text
from handseg.checkpoint import save_checkpoint
from handseg.classes import CLASSES
from handseg.model_card import card_for_folder
from handseg.scoring import ScoreResult

STATE_DIR = "state"


@dataclass
class TrainProgress:
    """Counters saved with the Accelerate state: ``epoch`` = completed epochs, ``step`` = optimiser steps,
    ``batch_in_epoch`` = micro-batches of the current epoch already trained (for a mid-epoch resume)."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_dice: float = -1.0
    best_epoch: int = 0
    bad_validations: int = 0
    last_dice: float | None = None

    def record_validation(self, mean_dice: float) -> bool:
        """Book a validation's mean Dice; True when it is the best so far (``best_epoch`` is this epoch)."""
        self.last_dice = mean_dice
        if mean_dice > self.best_dice:
            self.best_dice, self.best_epoch, self.bad_validations = mean_dice, self.epoch, 0
            return True
        self.bad_validations += 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class RunRecord:
    """What every model folder of a run records in ``handseg.json`` besides its own epoch, step and Dice: the
    resolved config, the model config, the input spec, the stage, the data fingerprint and how validation ran."""

    config: dict
    model: dict
    input: dict
    stage: int
    data_fingerprint: str
    validation: dict

    def info(self, progress: TrainProgress, dice: dict | None, mean_dice: float | None) -> dict[str, Any]:
        """The ``handseg.json`` payload of a model folder (see :mod:`handseg.checkpoint`)."""
        return {"model": self.model, "classes": list(CLASSES), "input": self.input, "stage": self.stage,
                "epoch": progress.epoch, "step": progress.step, "dice": dice, "mean_dice": mean_dice,
                "config": self.config, "data_fingerprint": self.data_fingerprint, "validation": self.validation}


def save_models(model: nn.Module, output_dir: Path, info: dict[str, Any], best: bool,
                prior: Path | None = None) -> None:
    """Write ``last/`` and, when ``best``, ``best/`` atomically, each with its model card ``README.md`` (and a
    cascade's stage-1 checkpoint ``prior`` copied in; main process only)."""
    save_checkpoint(model, Path(output_dir) / "last", info, readme=card_for_folder, prior=prior)
    if best:
        save_checkpoint(model, Path(output_dir) / "best", info, readme=card_for_folder, prior=prior)


def save_state(accelerator: Accelerator, output_dir: Path) -> Path:
    """``accelerator.save_state`` into ``<output_dir>/state`` via a temporary folder swapped in atomically."""
    final = Path(output_dir) / STATE_DIR
    tmp = Path(output_dir) / f".{STATE_DIR}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        old = Path(output_dir) / f".{STATE_DIR}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def has_state(output_dir: Path) -> bool:
    """Whether a resumable state exists (a state left half-swapped by a crash is recovered first)."""
    final = Path(output_dir) / STATE_DIR
    old = Path(output_dir) / f".{STATE_DIR}.old"
    if not final.is_dir() and old.is_dir():
        old.rename(final)
    return final.is_dir()


def load_state(accelerator: Accelerator, output_dir: Path) -> None:
    """Restore model, optimiser, sampler, RNG and the registered objects from ``<output_dir>/state``."""
    accelerator.load_state(str(Path(output_dir) / STATE_DIR))


def write_config(output_dir: Path, cfg_dict: dict) -> None:
    """Save the resolved config beside the checkpoints."""
    atomic_write_text(Path(output_dir) / "config.yaml", yaml.safe_dump(cfg_dict, sort_keys=False))


def write_validation(output_dir: Path, epoch: int, result: ScoreResult) -> Path:
    """Per-image and per-class Dice of one validation as ``validation/epoch_XXX.json``."""
    path = Path(output_dir) / "validation" / f"epoch_{epoch:03d}.json"
    summary = result.summary()
    payload = {
        "epoch": epoch,
        "n_images": len(result.names),
        "mean_dice": summary.mean,
        "per_class": summary.per_class,
        "per_image": {name: [float(v) for v in row] for name, row in zip(result.names, result.per_image_dice)},
    }
    atomic_write_text(path, json.dumps(payload, indent=1))
    return path
