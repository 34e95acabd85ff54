"""The checkpoint an evaluation names, and the eager or compiled engine built from it.

:func:`load_eval_checkpoint` resolves the config's checkpoint (the best of several candidates, printed) and
loads it with the config's tile-size and overlap overrides; :func:`load_engine` returns the
:class:`handseg.inference.engine.Engine` the config asks for: the eager model, or a compiled engine whose manifest must
match the checkpoint (a stale engine is refused). A cascade is two engines, its stage 2 and its stage 1 (the
prior: batch 1, the prior's input side), each compiled and checked against its own weights; an engine whose
manifest names a ``tail`` (the same network at batch 1) runs a batch's remainder on it instead of padding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from evaluator.backends import BACKENDS, available, require, resolve_backend
from evaluator.config import (
    EvalConfig,
    resolve_checkpoint,
    resolve_hand_norm,
    resolve_input_spec,
    resolve_tile_selection,
)
from evaluator.manifest import StaleEngineError, check_manifest, read_manifest
from handseg.inference.engine import Engine, eager_engine
from handseg.inference.settings import InferenceSettings, inference_settings
from handseg.model.checkpoint import LoadedCheckpoint, load_checkpoint
from handseg.runtime.devices import require_device


def load_eval_checkpoint(cfg: EvalConfig, device: str | None = None, file: str | Path = "<config>",
                         echo: bool = True) -> LoadedCheckpoint:
    """The config's checkpoint (see :func:`evaluator.config.resolve_checkpoint`), model on ``device``, with the
    config's ``tile_size`` / ``overlap`` applied to its input spec. A CUDA device that is not usable here is a
    one-line ConfigError naming ``device`` (and how to run on the CPU) before anything is read."""
    require_device(device or cfg.device, file)
    chosen = resolve_checkpoint(cfg, file, echo=echo)
    ckpt = load_checkpoint(chosen.folder, device=device or cfg.device, lazy=True)  # built if an eager engine needs it
    return replace(ckpt, spec=resolve_input_spec(cfg, ckpt.spec), candidates=chosen.candidates)


def efficiency_batches(cfg: EvalConfig) -> list[int]:
    """The tile batches ``evaluate_efficiency.py`` measures."""
    return sorted(set(cfg.efficiency.batch_sizes)) or [cfg.batch_size_eval]


def engine_batches(cfg: EvalConfig) -> list[int]:
    """The tile batches ``tensorrt_aot.py`` builds engines for: the evaluation's and every one the efficiency
    benchmark measures, so that each engine a later step loads exists."""
    return sorted({cfg.batch_size_eval, *efficiency_batches(cfg)})


def engine_path(cfg: EvalConfig, ckpt: LoadedCheckpoint, backend: str, batch: int, precision: str | None = None,
                part: str = "") -> Path:
    """Where the engine for these settings lives:
    ``<engine_dir>/<run>-<ckpt>_<backend>_<precision>_b<batch>_t<side><suffix>`` (or the config's ``engine``);
    ``part="prior"``: a cascade's stage 1, ``<run>-<ckpt>_prior_...`` at batch 1 and the prior's side."""
    precision = precision or cfg.precision
    if cfg.engine is not None and not part and batch == cfg.batch_size_eval and precision == cfg.precision:
        return Path(cfg.engine)
    folder = ckpt.folder.resolve()
    stem = f"{folder.parent.name}-{folder.name}" if folder.parent.name else folder.name
    if part:
        stem, side, batch = f"{stem}_{part}", ckpt.spec.prior.model_size, 1
    else:
        side = ckpt.spec.model_size
    return Path(cfg.engine_dir) / f"{stem}_{backend}_{precision}_b{batch}_t{side}{BACKENDS[backend].suffix}"


def load_engine(cfg: EvalConfig, ckpt: LoadedCheckpoint, backend: str | None = None, batch: int | None = None,
                precision: str | None = None, device: str | None = None) -> Engine:
    """The engine the config asks for; a compiled one must exist and its manifest must match the checkpoint (a
    cascade's stage 2 and stage 1 both)."""
    device = device or cfg.device
    precision = precision or cfg.precision
    batch = batch or cfg.batch_size_eval
    name = backend or cfg.backend
    if name == "auto":
        name = built_backend(cfg, ckpt, batch, precision, device)
    kind = require(name, device)
    if not kind.compiled:
        return eager_engine(ckpt.model, precision, device, prior=ckpt.prior.model if ckpt.prior else None)
    job = EngineJob(name, batch, precision)
    engine = _load_compiled(engine_path(cfg, ckpt, name, batch, precision), ckpt, ckpt.spec, job, device)
    tail = read_manifest(engine.path).get("tail")
    if tail:  # the same network at batch 1, for the tiles left over after full batches (nothing padded)
        engine.tail = _load_compiled(engine.path.with_name(tail["engine"]), ckpt, ckpt.spec,
                                     replace(job, batch=int(tail["batch_size"])), device)
    if ckpt.prior is None:
        return engine
    prior = _load_compiled(engine_path(cfg, ckpt, name, 1, precision, part="prior"), ckpt.prior, ckpt.spec.prior,
                           replace(job, batch=1, part="prior"), device)
    paired = read_manifest(engine.path).get("prior") or {}
    if paired.get("engine") != prior.path.name:
        raise StaleEngineError(f"{engine.path.name}: built with stage-1 engine {paired.get('engine')!r}, not "
                               f"{prior.path.name}; recompile both with `python tensorrt_aot.py`")
    return replace(engine, prior=prior)


@dataclass(frozen=True)
class EngineJob:
    """One compiled engine's settings: the backend, the static tile batch, the precision, the config file it was
    built from, and which part of a cascade it is (``"prior"``: stage 1; ``""``: the network itself)."""

    backend: str
    batch: int
    precision: str
    source: str = "config"
    part: str = ""


def built_backend(cfg: EvalConfig, ckpt: LoadedCheckpoint, batch: int, precision: str, device: str) -> str:
    """What ``auto`` loads: the first backend that can run on ``device`` and has an engine for these settings (a
    TensorRT build that fell back to AOTInductor left an AOTInductor engine), else the first that can run."""
    names = available(device)
    if not names:
        return resolve_backend("auto", device)  # raises, naming what is missing
    built = [n for n in names if engine_path(cfg, ckpt, n, batch, precision).is_file()]
    return (built or names)[0]


def _load_compiled(path: Path, ckpt: LoadedCheckpoint, spec, job: EngineJob, device: str) -> Engine:
    """One compiled engine at ``path`` (of ``job``: backend, batch, precision) onto ``device``, checked against
    ``ckpt``'s weights and the input ``spec``."""
    name, batch, precision, side = job.backend, job.batch, job.precision, spec.model_size
    if not path.is_file():
        raise StaleEngineError(
            f"{path}: no {name} engine for batch {batch}, tile {side}, {precision}; "
            f"compile it with `python tensorrt_aot.py --backend {name}` or use backend: eager"
        )
    check_manifest(read_manifest(path), ckpt.folder,
                   expect={"backend": name, "precision": precision, "input_shape": [batch, spec.channels, side, side]},
                   sha256=ckpt.weights_sha256)
    return Engine(fn=BACKENDS[name].load(path, device), backend=name, precision=precision, device=device,
                  batch_size=batch, side=side, path=path)


def eval_settings(cfg: EvalConfig, ckpt: LoadedCheckpoint, engine: Engine,
                  hand_norm: bool = True) -> InferenceSettings:
    """The inference settings of an evaluation: the config's tile batch, blending and TTA at the checkpoint's
    input spec, with the hand normalisation stored with the tuned thresholds (``hand_norm=False``: without,
    as threshold tuning and the engine agreement check run) and the tile selection of a cascade's stage 2
    (:func:`evaluator.config.resolve_tile_selection`)."""
    settings = inference_settings(ckpt.spec, engine, batch_size=cfg.batch_size_eval, blend=cfg.blend,
                                  flip_tta=cfg.flip_tta, hand_norm=resolve_hand_norm(cfg) if hand_norm else None)
    return replace(settings, selection=resolve_tile_selection(cfg))
