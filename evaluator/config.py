"""The evaluator's YAML schema (``config/eval.yaml``) and its resolution against a checkpoint.

Settings left empty (fold, n_folds, seed, tile_size, overlap) are filled from the checkpoint's ``handseg.json``,
so evaluation sees the validation fold and input scale that training used. Thresholds may be one number, 29
numbers, or the path of a file written by ``scripts/tune_thresholds.py``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from evaluator.robustness import RobustnessConfig
from handseg.classes import CLASSES, NUM_CLASSES
from handseg.config_schema import load_config
from handseg.errors import ConfigError

Backend = Literal["tensorrt", "aot_inductor", "eager", "auto"]
Precision = Literal["fp32", "fp16", "bf16"]

_DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")


@dataclass
class EfficiencyConfig:
    """Benchmark settings: ``batch_sizes`` empty means ``[1, batch_size_eval]``."""

    warmup: int = 3
    iters: int = 20
    batch_sizes: list[int] = field(default_factory=list)
    image_size: int = 2048  # side of the whole-image measurement (phantom image)
    image_iters: int = 2
    backends: list[str] = field(default_factory=list)  # empty: every backend available here
    compile_missing: bool = True  # compile AOTInductor engines that trt_models/ lacks

    def validate(self) -> None:
        if self.warmup < 0 or self.iters < 1 or self.image_iters < 1:
            raise ValueError("iters: warmup must be >= 0, iters and image_iters >= 1")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError("batch_sizes: every batch size must be >= 1")
        if self.image_size < 32:
            raise ValueError("image_size: must be >= 32")
        allowed = {"eager_fp32", "eager_autocast", "aot_inductor", "tensorrt"}
        bad = [b for b in self.backends if b not in allowed]
        if bad:
            raise ValueError(f"backends: unknown {bad[0]!r} (allowed: {', '.join(sorted(allowed))})")


@dataclass
class EvalConfig:
    """Everything ``tensorrt_aot.py``, ``accelerate_eval.sh`` and ``evaluate_efficiency.py`` read.

    ``checkpoint`` is one folder, or a list of candidates (e.g. stage 2's and stage 1's ``best/``): the one
    with the highest validation Dice recorded by training is used, and ``candidates`` keeps what was compared.
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
    backend: Backend = "auto"
    precision: Precision = "fp32"
    optimization_level: int = 3
    device: str = "cpu"
    flip_tta: bool = False
    thresholds: float | list[float] | str = 0.5
    engine_dir: Path = Path("trt_models")
    engine: Path | None = None  # explicit engine file; default: derived name under engine_dir
    output_dir: Path = Path("outputs/eval")
    sample_submission: Path | None = None  # default: <data_root>/sample_submission.csv when present
    n_worst_overlays: int = 4
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    candidates: list[dict] = field(default_factory=list, init=False)  # filled when checkpoint is a list

    def validate(self) -> None:
        if isinstance(self.checkpoint, list):
            self.checkpoint, self.candidates = _choose_checkpoint(self.checkpoint)
        if not Path(self.checkpoint).is_dir():
            raise ValueError(f"checkpoint: folder not found: {self.checkpoint}")
        if not _DEVICE_RE.match(self.device):
            raise ValueError(f"device: expected cpu, cuda or cuda:N, got {self.device!r}")
        if self.batch_size_eval < 1:
            raise ValueError("batch_size_eval: must be >= 1")
        if self.tile_size is not None and self.tile_size < 32:
            raise ValueError("tile_size: must be >= 32")
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ValueError("overlap: must be in [0, 1)")
        if not 0 <= self.optimization_level <= 5:
            raise ValueError("optimization_level: must be in 0..5")
        if self.n_folds is not None and self.n_folds < 2:
            raise ValueError("n_folds: must be >= 2")
        if self.fold is not None and self.fold < 0:
            raise ValueError("fold: must be >= 0")
        if self.fold is not None and self.n_folds is not None and self.fold >= self.n_folds:
            raise ValueError(f"fold: {self.fold} is not below n_folds {self.n_folds}")
        if self.n_worst_overlays < 0:
            raise ValueError("n_worst_overlays: must be >= 0")
        if isinstance(self.thresholds, list):
            _check_threshold_list(self.thresholds)
        elif isinstance(self.thresholds, float):
            if not 0.0 < self.thresholds < 1.0:
                raise ValueError("thresholds: must be in (0, 1)")
        elif not Path(self.thresholds).is_file():
            raise ValueError(f"thresholds: file not found: {self.thresholds}")


def _choose_checkpoint(folders: list[Path]) -> tuple[Path, list[dict]]:
    """The best of several candidate checkpoints by recorded validation Dice; problems name ``checkpoint``."""
    from handseg.checkpoint import best_checkpoint
    from handseg.errors import DataFormatError

    try:
        return best_checkpoint(folders)  # a missing folder is a DataFormatError naming it
    except (ValueError, DataFormatError) as exc:
        raise ValueError(f"checkpoint: {exc}") from None


def _check_threshold_list(values: list[float]) -> None:
    if len(values) != NUM_CLASSES:
        raise ValueError(f"thresholds: expected one number or {NUM_CLASSES} (one per class), got {len(values)}")
    bad = [v for v in values if not 0.0 < v < 1.0]
    if bad:
        raise ValueError(f"thresholds: every threshold must be in (0, 1), got {bad[0]}")


def load_eval_config(path: str | Path, overrides: dict | None = None) -> EvalConfig:
    """Read and validate an eval YAML; bad keys, types or a missing checkpoint -> ConfigError naming the key.

    When ``checkpoint`` lists candidates, the choice is printed to stderr.
    """
    cfg = load_config(path, EvalConfig, overrides=overrides)
    if cfg.candidates:
        compared = ", ".join(f"{c['checkpoint']} {c['mean_dice']:.4f}" for c in cfg.candidates)
        print(f"checkpoint: {cfg.checkpoint} has the best validation mean Dice ({compared})", file=sys.stderr)
    return cfg


def read_thresholds_file(path: str | Path) -> list[float]:
    """Read a thresholds file (JSON or YAML): ``thresholds`` as 29 numbers or a class -> number mapping."""
    path = Path(path)
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(path, "thresholds", f"cannot read thresholds file ({exc.__class__.__name__})") from None
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
    except ValueError as exc:
        raise ConfigError(path, "thresholds", str(exc).partition(": ")[2]) from None
    return [float(v) for v in values]


def resolve_thresholds(cfg: EvalConfig) -> list[float]:
    """The 29 per-class thresholds named by the config (a number is broadcast)."""
    t = cfg.thresholds
    if isinstance(t, float):
        return [t] * NUM_CLASSES
    if isinstance(t, list):
        return [float(v) for v in t]
    return read_thresholds_file(t)


def _find_key(tree: Any, key: str) -> Any:
    """First value of ``key`` in a nested dict, searched breadth-first (training configs nest split settings)."""
    queue = [tree]
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            if key in node and not isinstance(node[key], dict):
                return node[key]
            queue.extend(v for v in node.values() if isinstance(v, dict))
    return None


def resolve_split(cfg: EvalConfig, info: dict) -> tuple[int, int, int]:
    """(fold, n_folds, seed): the config's values, else the training run's (from ``handseg.json``), else 0/5/0."""
    train_cfg = info.get("config") or {}
    fold = cfg.fold if cfg.fold is not None else _find_key(train_cfg, "fold")
    n_folds = cfg.n_folds if cfg.n_folds is not None else _find_key(train_cfg, "n_folds")
    seed = cfg.seed
    for key in ("fold_seed", "split_seed", "seed"):  # the split's own seed wins over the run seed
        if seed is None:
            seed = _find_key(train_cfg.get("data", {}), key) if isinstance(train_cfg.get("data"), dict) else None
        if seed is None:
            seed = _find_key(train_cfg, key) if key != "seed" else None
    if seed is None:
        seed = _find_key(train_cfg, "seed")
    return int(fold if fold is not None else 0), int(n_folds if n_folds is not None else 5), int(seed or 0)


def resolve_input_spec(cfg: EvalConfig, spec):
    """The checkpoint's InputSpec with ``tile_size`` / ``overlap`` overridden where the config sets them."""
    changes = {}
    if cfg.tile_size is not None:
        changes["tile_size"] = cfg.tile_size
    if cfg.overlap is not None:
        changes["overlap"] = cfg.overlap
    return replace(spec, **changes) if changes else spec


def engine_input_side(spec) -> int:
    """Static side of the model input: the tile in tile mode, the resized image in resize mode."""
    return int(spec.tile_size if spec.mode == "tile" else spec.image_size)


def resolve_backend(backend: str, device: str) -> str:
    """``auto`` -> tensorrt where torch_tensorrt and CUDA are present, else aot_inductor."""
    if backend != "auto":
        return backend
    import importlib.util

    import torch

    has_trt = importlib.util.find_spec("torch_tensorrt") is not None
    return "tensorrt" if has_trt and device.startswith("cuda") and torch.cuda.is_available() else "aot_inductor"
