"""What a run writes to disk: ``best/`` and ``last/`` model folders, the resumable state, the run record.

Layout of ``<output_dir>``::

    best/   last/     Hugging Face folders (config.json, model.safetensors) + handseg.json (the run's record, with
                      the weights' sha256) + README.md (the model card, handseg.model.card)
    state/            the resumable state (below), for ``resume: true``
    validation/       per-epoch per-image Dice (JSON) written by the main process
    logs/             TensorBoard
    config.yaml       the resolved config
    .lock .lock.owner the run's lock (handseg.runtime.run_lock) and who holds it

The state folder holds no pickle, so resuming from it cannot run code (:mod:`trainer.tree_io`)::

    trainer_state.json            format, number of processes, progress (epoch, optimiser step, micro-batches of
                                  the current epoch done: the sampler position), schedule, Accelerate's
                                  micro-batch counter (the gradient-accumulation phase), and the size and
                                  sha256 of every other file, checked before anything is loaded
    model.safetensors/.json       the prepared model's weights (TrainModule: ``model.`` + the HF names)
    optimizer.safetensors/.json   the optimiser's tensors / its param groups and the structure of its state
    ema.safetensors/.json         the EMA weights and update count (EMA on)
    scaler.safetensors/.json      the fp16 gradient scaler (fp16 only)
    rng_<rank>.safetensors/.json  each process's torch (CPU, CUDA), numpy and Python generator states

Model folders and the state folder are written beside their target under a unique staging name and swapped in
(:mod:`handseg.runtime.atomic`), so a crash, a kill or a full disk mid-save leaves the previous version usable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn

from handseg.format.classes import CLASSES
from handseg.inference.scoring import ScoreResult
from handseg.model.card import card_for_folder
from handseg.model.checkpoint import save_checkpoint
from handseg.runtime.atomic import StagedFolder, atomic_write_text, recover_folder
from handseg.runtime.disk import DiskFullError, disk_full_guard, folder_bytes
from handseg.runtime.errors import DataFormatError, HandSegError
from handseg.runtime.file_digest import file_record, file_sha256
from trainer import rng
from trainer.state import TrainProgress, TrainState
from trainer.tree_io import load_tree, save_tree, tree_nbytes

STATE_DIR = "state"
STATE_RECORD = "trainer_state.json"
STATE_FORMAT = 1
_RECORD_KEYS = ("num_processes", "progress", "schedule", "accumulation_step", "files")


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
        """The ``handseg.json`` payload of a model folder (see :mod:`handseg.model.checkpoint`)."""
        return {"model": self.model, "classes": list(CLASSES), "input": self.input, "stage": self.stage,
                "epoch": progress.epoch, "step": progress.step, "dice": dice, "mean_dice": mean_dice,
                "config": self.config, "data_fingerprint": self.data_fingerprint, "validation": self.validation}


def save_models(model: nn.Module, output_dir: Path, info: dict[str, Any], best: bool,
                prior: Path | None = None) -> None:
    """Write ``last/`` and, when ``best``, ``best/`` atomically, each with its model card ``README.md`` (and a
    cascade's stage-1 checkpoint ``prior`` copied in; main process only). A full disk stops the run with one line
    naming the state it can resume from."""
    try:
        save_checkpoint(model, Path(output_dir) / "last", info, readme=card_for_folder, prior=prior)
        if best:
            save_checkpoint(model, Path(output_dir) / "best", info, readme=card_for_folder, prior=prior)
    except DiskFullError as exc:
        raise exc.with_note(f"; the previous version is intact; {describe_state(output_dir)}") from None


def save_state(accelerator: Accelerator, output_dir: Path, state: TrainState) -> Path:
    """Write the resumable state (see the module docstring) into a staging folder and swap it in as
    ``<output_dir>/state``: every process writes its generator states, the main process the shared files and,
    last, ``trainer_state.json`` with the size and sha256 of every file."""
    final = Path(output_dir) / STATE_DIR
    trees = _shared_trees(accelerator, state) if accelerator.is_main_process else {}
    own = rng.capture(cuda=accelerator.device.type == "cuda")
    needed = max(sum(tree_nbytes(t) for t in trees.values()) + tree_nbytes(own), folder_bytes(final))
    staged = StagedFolder(final)
    staging = [str(staged.begin())] if accelerator.is_main_process else [None]
    if accelerator.num_processes > 1:  # every process writes its generators into the main process's staging
        broadcast_object_list(staging, from_process=0)
    try:
        with disk_full_guard(final, "the training state", needed):
            try:
                _write_state(accelerator, Path(staging[0]), staged, state, own=own, trees=trees)
            finally:
                staged.discard()  # the main process's staging (other processes hold none)
    except DiskFullError as exc:
        raise exc.with_note(f"; nothing was replaced; {describe_state(output_dir)}") from None
    accelerator.wait_for_everyone()
    return final


def _write_state(accelerator: Accelerator, tmp: Path, staged: StagedFolder, state: TrainState, *, own: dict,
                 trees: dict[str, Any]) -> None:
    """Every process: its generators; the main process: the shared files, then the record, then the swap."""
    save_tree(tmp, f"rng_{accelerator.process_index}", own)
    for name, tree in trees.items():
        save_tree(tmp, name, tree)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {"format": STATE_FORMAT, "num_processes": accelerator.num_processes,
                  "progress": state.progress.state_dict(), "schedule": state.schedule.state_dict(),
                  "accumulation_step": accelerator.step,
                  "files": {p.name: file_record(p) for p in sorted(tmp.iterdir())}}
        (tmp / STATE_RECORD).write_text(json.dumps(record, indent=1))
        staged.commit()


def _shared_trees(accelerator: Accelerator, state: TrainState) -> dict[str, Any]:
    """The state files every process shares (written by the main process): model, optimiser, EMA, scaler."""
    trees = {"model": accelerator.unwrap_model(state.model).state_dict(), "optimizer": state.optimizer.state_dict()}
    if state.ema is not None:
        trees["ema"] = state.ema.state_dict()
    if accelerator.scaler is not None:
        trees["scaler"] = accelerator.scaler.state_dict()
    return trees


def has_state(output_dir: Path) -> bool:
    """Whether a resumable state exists (also one left set aside by a save that died mid-swap)."""
    final = Path(output_dir) / STATE_DIR
    return final.is_dir() or any(Path(output_dir).glob(f".{STATE_DIR}.*.old"))


def read_state_record(folder: Path) -> dict[str, Any]:
    """``trainer_state.json`` of a state folder, checked; a state in Accelerate's pickle format (an earlier
    version) is refused without reading any of it."""
    path = folder / STATE_RECORD
    if not path.is_file():
        if any(folder.glob("*.pkl")) or any(folder.glob("*.bin")):
            raise DataFormatError(folder, "written in Accelerate's pickle format by an earlier version; it is not "
                                          "loaded, since unpickling can run code: train without resume: true")
        raise DataFormatError(path, "missing from the saved state")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(path, f"malformed JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT:
        raise DataFormatError(path, f"not a training state of format {STATE_FORMAT}")
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing or not isinstance(record["files"], dict):
        raise DataFormatError(path, f"incomplete: {missing[0] if missing else 'files'} is missing or malformed")
    for name, expected in record["files"].items():
        file = folder / name
        if not file.is_file():
            raise DataFormatError(file, "missing from the saved state")
        saved = expected.get("bytes") if isinstance(expected, dict) else None
        if file.stat().st_size != saved:
            raise DataFormatError(file, f"truncated or replaced ({file.stat().st_size} bytes, {saved} saved)")
        if file_sha256(file) != expected.get("sha256"):
            raise DataFormatError(file, f"damaged: its sha256 differs from the one saved in {STATE_RECORD}")
    return record


def describe_state(output_dir: Path) -> str:
    """Which resumable state a stopped run leaves, for its last message."""
    folder = Path(output_dir) / STATE_DIR
    try:
        progress = json.loads((folder / STATE_RECORD).read_text())["progress"]
        return (f"the last good state is {folder} (epoch {progress['epoch']}, step {progress['step']}; "
                "resume: true continues from it)")
    except (OSError, ValueError, KeyError, TypeError):
        return "no resumable state was saved yet"


def load_state(accelerator: Accelerator, output_dir: Path, state: TrainState) -> None:
    """Restore model, optimiser, schedule, progress (the sampler position), EMA and scaler from
    ``<output_dir>/state``, then, last, this process's generators. Every file is checked first (size, sha256);
    a missing, damaged or foreign file is a one-line DataFormatError naming it."""
    folder = Path(output_dir) / STATE_DIR
    if accelerator.is_main_process:
        recover_folder(folder)
    accelerator.wait_for_everyone()
    record = read_state_record(folder)
    if record["num_processes"] != accelerator.num_processes:
        raise HandSegError(f"{folder}: saved by {record['num_processes']} process(es), this run has "
                           f"{accelerator.num_processes}: an exact resume needs the same number")
    _load_into(accelerator.unwrap_model(state.model), load_tree(folder, "model"), folder / "model.safetensors")
    _load_into(state.optimizer, load_tree(folder, "optimizer"), folder / "optimizer.safetensors")
    _load_into(state.schedule, record["schedule"], folder / STATE_RECORD)
    _load_into(state.progress, record["progress"], folder / STATE_RECORD)
    accelerator.step = int(record["accumulation_step"])  # where gradient accumulation is in its cycle
    if state.ema is not None:
        _load_into(state.ema, load_tree(folder, "ema"), folder / "ema.safetensors")
    if accelerator.scaler is not None:
        _load_into(accelerator.scaler, load_tree(folder, "scaler"), folder / "scaler.safetensors")
    rng.restore(load_tree(folder, f"rng_{accelerator.process_index}"))


def _load_into(target: Any, tree: Any, path: Path) -> None:
    try:
        target.load_state_dict(tree)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataFormatError(path, f"does not fit this run ({' '.join(str(exc).split())[:200]})") from None


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
