"""Checkpoints as Hugging Face model folders plus ``handseg.json``.

A checkpoint folder holds ``config.json`` (with ``id2label``), ``model.safetensors`` and ``handseg.json``
(what produced it: model config, classes, input spec, stage, epoch, step, Dice, run config, data
fingerprint, versions, and ``weights_sha256``, the sha256 of ``model.safetensors``). Saving is atomic: the
folder is written beside the target under a unique temporary name and renamed into place, so a crash, a kill
or a full disk mid-save leaves the previous checkpoint intact. Weights are only ever read from safetensors
files, never unpickled, and loading checks them against the recorded sha256 (checkpoints saved before it was
recorded load without the check).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import transformers
from torch import nn
from transformers.utils import logging as hf_logging

import handseg
from handseg.data.data_config import DataConfig
from handseg.format.classes import CLASSES
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig, model_class
from handseg.runtime.atomic import atomic_folder
from handseg.runtime.config_schema import from_dict, to_dict
from handseg.runtime.errors import ConfigError, DataFormatError, HandSegError
from handseg.runtime.file_digest import file_sha256

INFO_FILE = "handseg.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE, INFO_FILE)
PRIOR_DIR = "prior"  # a cascade checkpoint's stage 1, inside it
README_FILE = "README.md"  # optional: the model card


def versions() -> dict[str, str]:
    """Library versions recorded in every artefact (checkpoints, engine manifests)."""
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "handseg": handseg.__version__}
    try:
        out["torch_tensorrt"] = importlib.metadata.version("torch-tensorrt")  # optional, not imported
    except importlib.metadata.PackageNotFoundError:
        pass
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
    return out


@dataclass
class LoadedCheckpoint:
    """A checkpoint folder loaded for use: the model (eval mode, on ``device``), its ``handseg.json`` record, the
    model config and the input spec it was trained with (the evaluator may override tile size and overlap), and the
    candidate checkpoints it was chosen from, if any (rows of :func:`handseg.model.selection.best_checkpoint`);
    ``prior``: a cascade's stage 1 (its ``prior/`` folder).

    ``model`` is read from ``model.safetensors`` when first used (at load time unless loaded with ``lazy=True``):
    a process that only runs a compiled engine never builds the transformers model nor imports its code."""

    folder: Path
    info: dict
    model_cfg: ModelConfig
    spec: InputSpec
    candidates: list[dict] = field(default_factory=list)
    prior: "LoadedCheckpoint | None" = None
    device: str = "cpu"
    loaded_model: nn.Module | None = field(default=None, repr=False)

    @property
    def model(self) -> nn.Module:
        """The transformers model in eval mode on ``device``, read from the folder on first use."""
        if self.loaded_model is None:
            self.loaded_model = _read_model(self.folder, self.model_cfg).to(self.device).eval()
        return self.loaded_model

    @property
    def weights_sha256(self) -> str:
        """sha256 of the loaded weights: the one ``handseg.json`` records (checked when the folder was loaded), or
        for a checkpoint from before that record, the file hashed now."""
        recorded = self.info.get("weights_sha256")
        return str(recorded) if recorded is not None else checkpoint_sha256(self.folder)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@contextlib.contextmanager
def _quiet_hf():
    """Silence transformers' per-file progress bars while one checkpoint is read or written."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The ``transformers`` model inside DistributedDataParallel (``.module``) or torch.compile (``._orig_mod``)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def save_checkpoint(model: nn.Module, folder: str | os.PathLike, info: dict,
                    state_dict: dict[str, torch.Tensor] | None = None,
                    readme: Callable[[Path, dict], str] | None = None,
                    prior: str | os.PathLike | None = None) -> Path:
    """Write ``model`` and ``info`` to ``folder`` atomically; returns the folder.

    ``model`` is a ``transformers`` model, possibly wrapped by DDP or torch.compile. ``state_dict`` saves other
    weights of the same shapes instead of the model's own (e.g. EMA weights). ``classes`` and ``versions``
    are filled in when ``info`` lacks them; dataclasses in ``info`` are converted with
    :func:`handseg.runtime.config_schema.to_dict`. ``readme(staging_folder, record)`` returns the text of a
    ``README.md`` (the model card, :func:`handseg.model.card.card_for_folder`), written inside the staging
    folder so that it is swapped in with the weights. ``prior``: a cascade's stage-1 checkpoint folder, copied in
    as ``prior/`` (and named in ``handseg.json``), so that a cascade checkpoint is complete on its own.
    """
    model = unwrap_model(model)
    folder = Path(folder)
    record = to_dict(dict(info))
    record.setdefault("classes", list(CLASSES))
    record.setdefault("versions", versions())
    if prior is not None:
        read_info(prior)  # a complete checkpoint, or a one-line error before anything is written
        record["prior"] = PRIOR_DIR
    json.dumps(record, default=_json_default)  # fail before touching the disk

    weights = state_dict if state_dict is not None else model.state_dict()
    payload = sum(t.numel() * t.element_size() for t in weights.values() if isinstance(t, torch.Tensor))
    with atomic_folder(folder, "a checkpoint", payload) as tmp:
        with _quiet_hf():
            model.save_pretrained(tmp, state_dict=state_dict)
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (tmp / name).is_file()]
        if missing:
            raise RuntimeError(f"save_pretrained did not write {missing} (sharded or non-safetensors output?)")
        record["weights_sha256"] = file_sha256(tmp / WEIGHTS_FILE)
        text = json.dumps(record, indent=2, default=_json_default)
        (tmp / INFO_FILE).write_text(text)
        if prior is not None:
            (tmp / PRIOR_DIR).mkdir()
            for name in (*REQUIRED_FILES, README_FILE):
                if (Path(prior) / name).is_file():
                    shutil.copy2(Path(prior) / name, tmp / PRIOR_DIR / name)
        if readme is not None:
            (tmp / README_FILE).write_text(readme(tmp, json.loads(text)), encoding="utf-8")
    return folder


def read_info(folder: str | os.PathLike) -> dict:
    """``handseg.json`` of a checkpoint, validated (all required files present, classes equal CLASSES)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(folder, "checkpoint folder not found")
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise DataFormatError(folder / name, "missing from the checkpoint folder")
    try:
        info = json.loads((folder / INFO_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(folder / INFO_FILE, f"malformed JSON ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise DataFormatError(folder / INFO_FILE, "expected a mapping with a 'model' entry")
    classes = info.get("classes")
    if classes != list(CLASSES):
        raise DataFormatError(folder / INFO_FILE, _classes_problem(classes))
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(folder / CONFIG_FILE, f"malformed JSON ({exc})") from None
    id2label = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(id2label, dict) or [id2label.get(str(i)) for i in range(len(id2label))] != list(CLASSES):
        raise DataFormatError(folder / CONFIG_FILE, "id2label differs from the project's 29 classes")
    return info


def _classes_problem(classes: Any) -> str:
    if not isinstance(classes, list):
        return "no 'classes' list"
    if len(classes) != len(CLASSES):
        return f"checkpoint has {len(classes)} classes, the project has {len(CLASSES)}"
    diff = next(i for i, (a, b) in enumerate(zip(classes, CLASSES)) if a != b)
    return f"class {diff} is {classes[diff]!r}, the project expects {CLASSES[diff]!r}"


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    arch: str | None = None, lazy: bool = False) -> LoadedCheckpoint:
    """Load a checkpoint folder, weights from safetensors only, model in eval mode.

    Missing folder or files, malformed JSON, classes other than CLASSES, weights whose sha256 differs from the
    recorded one, a corrupt weights file, missing or unexpected weights, or (when ``arch`` is given) another
    architecture -> DataFormatError. ``lazy``: the model is read when ``.model`` is first used (the weights
    file is still checked against its recorded sha256 now), so that its errors come from there.
    """
    folder = Path(folder)
    info = read_info(folder)
    try:
        model_cfg = ModelConfig(**info["model"])
        model_cfg.check()
        spec = InputSpec.from_dict(info["input"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataFormatError(folder / INFO_FILE, f"invalid 'model' or 'input' entry ({exc})") from None
    if arch is not None and model_cfg.arch != arch:
        raise DataFormatError(folder, f"checkpoint is a {model_cfg.arch} model, expected {arch}")
    verify_weights(folder, info)
    prior = None
    if info.get("prior"):
        prior = load_checkpoint(folder / str(info["prior"]), device=device, lazy=lazy)
        if spec.prior is None or prior.spec.prior is not None:
            raise DataFormatError(folder / INFO_FILE, "a prior/ checkpoint needs a cascade input spec and a stage-1 "
                                                      "prior")
    elif spec.prior is not None:
        raise DataFormatError(folder / INFO_FILE, f"a cascade input spec but no {PRIOR_DIR}/ checkpoint")
    ckpt = LoadedCheckpoint(folder=folder, info=info, model_cfg=model_cfg, spec=spec, prior=prior, device=str(device))
    if not lazy:
        ckpt.model  # noqa: B018 - read the weights now, so that a damaged file fails the load
    return ckpt


def _read_model(folder: Path, model_cfg: ModelConfig) -> nn.Module:
    """The transformers model of a checked checkpoint folder, from its safetensors weights; a file that cannot be
    read or does not fit the config is a DataFormatError naming it."""
    try:
        with _quiet_hf():
            model, loading = model_class(model_cfg.arch).from_pretrained(
                folder, use_safetensors=True, local_files_only=True, output_loading_info=True
            )
    except HandSegError:
        raise
    except Exception as exc:  # corrupt safetensors, wrong config types, ...: the file is at fault
        raise DataFormatError(folder / WEIGHTS_FILE, f"cannot load weights ({type(exc).__name__}: "
                                                     f"{' '.join(str(exc).split())[:300]})") from None
    problems = {k: v for k, v in loading.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        key, names = next(iter(problems.items()))
        raise DataFormatError(folder / WEIGHTS_FILE, f"{key.replace('_', ' ')}: {sorted(map(str, names))[:3]}")
    return model


def checkpoint_sha256(folder: str | os.PathLike) -> str:
    """sha256 hex digest of the checkpoint's ``model.safetensors`` (identifies the weights in manifests)."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise DataFormatError(path, "missing from the checkpoint folder")
    return file_sha256(path)


def verify_weights(folder: str | os.PathLike, info: dict) -> None:
    """Check ``model.safetensors`` against the sha256 recorded in ``handseg.json`` (no record: nothing to check);
    a difference is a DataFormatError naming the file."""
    expected = info.get("weights_sha256")
    if expected is None:
        return
    actual = checkpoint_sha256(folder)
    if actual != expected:
        raise DataFormatError(Path(folder) / WEIGHTS_FILE, f"damaged or replaced: its sha256 {actual[:12]}... differs "
                                                           f"from {str(expected)[:12]}... recorded in {INFO_FILE}")


def recorded_data_config(info: dict, folder: str | os.PathLike) -> DataConfig:
    """The training run's ``data:`` section from a checkpoint record (``handseg.json``'s ``config.data``), parsed
    with the training schema; DataFormatError naming ``handseg.json`` when it is missing or malformed."""
    path = Path(folder) / INFO_FILE
    data = (info.get("config") or {}).get("data")
    if not isinstance(data, dict):
        raise DataFormatError(path, "no 'config.data' entry: the training run's data section is needed for its fold")
    try:
        return from_dict(DataConfig, data, file=path, prefix="config.data")
    except ConfigError as exc:
        raise DataFormatError(path, f"{exc.key}: {exc.problem}") from None
