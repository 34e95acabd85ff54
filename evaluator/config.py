"""The evaluator's YAML schema (``config/eval.yaml``), checked on load, and its explicit resolution steps.

``load_eval_config`` reads and checks values only. :func:`resolve_checkpoint` then chooses among candidate
checkpoints (printing the choice); settings left empty (fold, n_folds, seed, tile_size, overlap) are taken from
the checkpoint's record when it is loaded (``evaluator.engines.load_eval_checkpoint``), so evaluation sees the
validation fold and input scale that training used. Thresholds may be one number, 29 numbers, or the path of a
file written by ``scripts/tune_thresholds.py``.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from evaluator.backends import BACKEND_CHOICES, BACKENDS
from evaluator.checkpoint_hint import missing_checkpoint_hint
from evaluator.robustness_config import RobustnessConfig
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.inference.engine import DTYPES
from handseg.inference.hand_norm import HandNorm
from handseg.inference.postprocess import PostProcessing
from handseg.inference.tile_selection import TileSelection
from handseg.model.selection import best_checkpoint
from handseg.runtime.config_schema import FieldError, load_config
from handseg.runtime.errors import ConfigError, DataFormatError

EFFICIENCY_ENGINES = ("eager_fp32", "eager_autocast", *(n for n, b in BACKENDS.items() if b.compiled))

_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


@dataclass
class EfficiencyConfig:
    """Benchmark settings: ``batch_sizes`` empty means ``[batch_size_eval]``; ``tensorrt_aot.py`` builds these too."""

    warmup: int = 3
    iters: int = 20
    batch_sizes: list[int] = field(default_factory=list)
    image_size: int = 2048  # side of the whole-image measurement (phantom image)
    image_iters: int = 2
    backends: list[str] = field(default_factory=list)  # empty: every backend available here
    compile_missing: bool = True  # compile AOTInductor engines that trt_models/ lacks

    def check(self) -> None:
        if self.warmup < 0 or self.iters < 1 or self.image_iters < 1:
            raise FieldError("iters", "warmup must be >= 0, iters and image_iters >= 1")
        if any(b < 1 for b in self.batch_sizes):
            raise FieldError("batch_sizes", "every batch size must be >= 1")
        if self.image_size < 32:
            raise FieldError("image_size", "must be >= 32")
        bad = [b for b in self.backends if b not in EFFICIENCY_ENGINES]
        if bad:
            raise FieldError("backends", f"unknown {bad[0]!r} (allowed: {', '.join(EFFICIENCY_ENGINES)})")


@dataclass
class EvalConfig:
    """Everything ``tensorrt_aot.py``, ``accelerate_eval.sh`` and ``evaluate_efficiency.py`` read.

    ``checkpoint`` is one folder, or a list of candidates (e.g. stage 2's and stage 1's ``best/``):
    :func:`resolve_checkpoint` picks the one with the highest validation Dice recorded by training.
    """

    checkpoint: Path | list[Path]
    data_root: Path = Path("data")
    fold: int | None = None  # None: the checkpoint's training fold
    n_folds: int | None = None
    seed: int | None = None
    tile_size: int | None = None  # None: the checkpoint's InputSpec
    overlap: float | None = None
    batch_size_eval: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    backend: str = "auto"  # a name of evaluator.backends.BACKENDS, or auto
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    optimization_level: int = 3
    device: str = "cpu"
    flip_tta: bool = False
    thresholds: float | list[float] | str = 0.5
    hand_norm: bool = True  # size and orientation normalisation stored with tuned thresholds (inference.hand_norm)
    tile_selection: bool = True  # a cascade's stage 2 only near the bones stage 1 finds; false: every tile
    engine_dir: Path = Path("trt_models")
    engine: Path | None = None  # explicit engine file; default: derived name under engine_dir
    output_dir: Path = Path("outputs/eval")
    sample_submission: Path | None = None  # default: <data_root>/sample_submission.csv when present
    n_worst_overlays: int = 4
    accelerate_config: Path | None = None  # default: single_gpu.yaml with a GPU, cpu.yaml without
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)

    def check(self) -> None:
        if isinstance(self.checkpoint, list) and not self.checkpoint:
            raise FieldError("checkpoint", "the list of candidate checkpoints is empty")
        if self.backend not in BACKEND_CHOICES:
            raise FieldError("backend", f"must be one of {list(BACKEND_CHOICES)}, got {self.backend!r}")
        if self.precision not in DTYPES:
            raise FieldError("precision", f"must be one of {list(DTYPES)}, got {self.precision!r}")
        if not _DEVICE_RE.match(self.device):
            raise FieldError("device", f"expected cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size_eval < 1:
            raise FieldError("batch_size_eval", "must be >= 1")
        if self.tile_size is not None and self.tile_size < 32:
            raise FieldError("tile_size", "must be >= 32")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise FieldError("overlap", "must be in [0, 1)")
        if not 0 <= self.optimization_level <= 5:
            raise FieldError("optimization_level", "must be in 0..5")
        if self.n_folds is not None and self.n_folds < 2:
            raise FieldError("n_folds", "must be >= 2")
        if self.fold is not None and self.fold < 0:
            raise FieldError("fold", "must be >= 0")
        if self.fold is not None and self.n_folds is not None and self.fold >= self.n_folds:
            raise FieldError("fold", f"{self.fold} is not below n_folds {self.n_folds}")
        if self.n_worst_overlays < 0:
            raise FieldError("n_worst_overlays", "must be >= 0")
        if isinstance(self.thresholds, list):
            _check_threshold_list(self.thresholds)
        elif isinstance(self.thresholds, float) and not 0.0 < self.thresholds < 1.0:
            raise FieldError("thresholds", "must be in (0, 1)")


@dataclass
class ChosenCheckpoint:
    """The checkpoint an evaluation uses and, when the config listed candidates, what was compared."""

    folder: Path
    candidates: list[dict] = field(default_factory=list)


def resolve_checkpoint(cfg: EvalConfig, file: str | Path = "<config>", echo: bool = True) -> ChosenCheckpoint:
    """The config's checkpoint folder, or the candidate with the best validation Dice recorded by training
    (printed to stderr when ``echo``). A missing folder (the error then names the configs whose checkpoints
    exist), or candidates validated on other images, is a ConfigError naming ``checkpoint``."""
    missing = [c for c in (cfg.checkpoint if isinstance(cfg.checkpoint, list) else [cfg.checkpoint])
               if not Path(c).is_dir()]
    if missing:  # the hint names the configs whose checkpoints do exist (e.g. the demo's)
        raise ConfigError(file, "checkpoint", f"folder not found: {missing[0]}{missing_checkpoint_hint(file)}")
    if not isinstance(cfg.checkpoint, list):
        return ChosenCheckpoint(Path(cfg.checkpoint))
    try:
        folder, rows = best_checkpoint(cfg.checkpoint)  # a missing folder is a DataFormatError naming it
    except (ValueError, DataFormatError) as exc:
        raise ConfigError(file, "checkpoint", str(exc)) from None
    if echo:
        compared = ", ".join(f"{c['checkpoint']} {c['mean_dice']:.4f}" for c in rows)
        print(f"checkpoint: {folder} has the best validation mean Dice ({compared})", file=sys.stderr)
    return ChosenCheckpoint(folder, rows)


def _check_threshold_list(values: list[float]) -> None:
    if len(values) != NUM_CLASSES:
        raise FieldError("thresholds", f"expected one number or {NUM_CLASSES} (one per class), got {len(values)}")
    bad = [v for v in values if not 0.0 < v < 1.0]
    if bad:
        raise FieldError("thresholds", f"every threshold must be in (0, 1), got {bad[0]}")


def load_eval_config(path: str | Path, overrides: dict | None = None, sets: Sequence[str] = ()) -> EvalConfig:
    """Read and check an eval YAML and its ``--set`` strings (bad keys, types or values -> ConfigError naming the
    key); nothing else is read or chosen here (see :func:`resolve_checkpoint`)."""
    return load_config(path, EvalConfig, overrides=overrides, sets=sets)


def thresholds_file(path: Path) -> Any:
    """The parsed content of a thresholds file (JSON or YAML), read once while the file is unchanged (thresholds,
    post-processing, hand normalisation and tile selection all come from it); a missing or unreadable file is a
    one-line ConfigError."""
    try:
        stat = path.stat()
    except OSError:
        raise ConfigError(path, "thresholds", "thresholds file not found") from None
    try:
        return copy.deepcopy(_parsed(str(path.resolve()), stat.st_mtime_ns, stat.st_size))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(path, "thresholds", f"cannot read thresholds file ({exc.__class__.__name__})") from None


@functools.lru_cache(maxsize=8)
def _parsed(path: str, _mtime_ns: int, _size: int) -> Any:
    """``path`` parsed; the modification time and size are part of the cache key, so a rewritten file is read
    again."""
    text = Path(path).read_text()
    return json.loads(text) if path.endswith(".json") else yaml.safe_load(text)


def read_thresholds_file(path: str | Path) -> list[float]:
    """Read a thresholds file (JSON or YAML): ``thresholds`` as 29 numbers or a class -> number mapping."""
    path = Path(path)
    data = thresholds_file(path)
    values: Any = data.get("thresholds") if isinstance(data, dict) else data
    if isinstance(values, dict):
        missing = [c for c in CLASSES if c not in values]
        if missing:
            raise ConfigError(path, "thresholds", f"missing class {missing[0]!r}")
        values = [values[c] for c in CLASSES]
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
        raise ConfigError(path, "thresholds", "expected a list of numbers or a class -> number mapping")
    try:
        _check_threshold_list([float(v) for v in values])
    except FieldError as exc:
        raise ConfigError(path, "thresholds", exc.problem) from None
    return [float(v) for v in values]


def resolve_thresholds(cfg: EvalConfig) -> list[float]:
    """The 29 per-class thresholds named by the config (a number is broadcast)."""
    t = cfg.thresholds
    if isinstance(t, float):
        return [t] * NUM_CLASSES
    if isinstance(t, list):
        return [float(v) for v in t]
    return read_thresholds_file(t)


def _thresholds_file_entry(cfg: EvalConfig, key: str) -> Any:
    """The ``key`` entry of the tuned thresholds file the config names (None: no file, or no such entry)."""
    if not isinstance(cfg.thresholds, str):
        return None
    data = thresholds_file(Path(cfg.thresholds))
    return data.get(key) if isinstance(data, dict) else None


def resolve_postprocess(cfg: EvalConfig) -> PostProcessing | None:
    """The post-processing stored with tuned thresholds (the thresholds file's ``postprocess``), or None."""
    entry = _thresholds_file_entry(cfg, "postprocess")
    if entry is None:
        return None
    try:
        choice = PostProcessing.from_dict(entry)
    except (ValueError, TypeError) as exc:
        raise ConfigError(cfg.thresholds, "postprocess", str(exc)) from None
    return choice if choice.active else None


def resolve_hand_norm(cfg: EvalConfig) -> HandNorm | None:
    """The hand normalisation (size, orientation) stored with tuned thresholds (the thresholds file's
    ``hand_norm``), or None (``hand_norm: false`` in the config, thresholds given as numbers, or a file without
    it). A file tuned before the orientation was added stores the size reference alone as ``scale_norm``: it is
    read as a normalisation of the size only."""
    if not cfg.hand_norm:
        return None
    key = "hand_norm"
    entry = _thresholds_file_entry(cfg, key)
    if entry is None:
        key = "scale_norm"
        entry = _thresholds_file_entry(cfg, key)
    if entry is None:
        return None
    try:
        return HandNorm.from_dict(entry)
    except FieldError as exc:
        raise ConfigError(cfg.thresholds, f"{key}.{exc.key}", exc.problem) from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(cfg.thresholds, key, str(exc)) from None


def resolve_tile_selection(cfg: EvalConfig) -> TileSelection | None:
    """Which tiles a cascade's stage 2 runs on (:mod:`handseg.inference.tile_selection`): the selection stored with
    tuned thresholds (the thresholds file's ``tile_selection``: the margin chosen on validation), else the default
    one (also while the file is not written yet: engines are compiled before thresholds are tuned); None (every
    tile) with ``tile_selection: false``."""
    if not cfg.tile_selection:
        return None
    if isinstance(cfg.thresholds, str) and not Path(cfg.thresholds).is_file():
        return TileSelection()
    entry = _thresholds_file_entry(cfg, "tile_selection")
    if entry is None:
        return TileSelection()
    try:
        return TileSelection.from_dict(entry)
    except FieldError as exc:
        raise ConfigError(cfg.thresholds, f"tile_selection.{exc.key}", exc.problem) from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(cfg.thresholds, "tile_selection", str(exc)) from None


def resolve_input_spec(cfg: EvalConfig, spec):
    """The checkpoint's InputSpec with ``tile_size`` / ``overlap`` overridden where the config sets them."""
    changes = {}
    if cfg.tile_size is not None:
        changes["tile_size"] = cfg.tile_size
    if cfg.overlap is not None:
        changes["overlap"] = cfg.overlap
    return replace(spec, **changes) if changes else spec
