"""Build the engine of a checkpoint: export, compile with its backend, measure agreement, write the manifest.

A cascade's stage 2 is compiled with its stage 1 (the prior, at batch 1 and the prior's input side): two engine
files, each with its manifest; stage 2's names the stage-1 engine it was built with. On a CPU, AOTInductor compiles
the two side by side (:func:`_compile_cascade`). An engine with a static batch
above 1 is also compiled at batch 1, its ``tail``, which runs the tiles left over after the full batches (a
cascade's stage 2 runs on as many tiles as stage 1 finds bone in), so no tile is padded; the manifest names it.
With ``backend: auto`` a TensorRT build that fails (a broken install can import and still fail to compile) is
done again with AOTInductor, with one line saying why; an explicit ``tensorrt`` that fails is a one-line error.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from evaluator.agreement import compare
from evaluator.backends import require, resolve_backend
from evaluator.config import EvalConfig
from evaluator.engines import EngineJob, engine_path, eval_settings
from evaluator.export import example_input, export_logits
from evaluator.manifest import EngineRecord, write_manifest
from handseg.inference.engine import Engine, eager_engine
from handseg.model.checkpoint import LoadedCheckpoint
from handseg.model.io import InputSpec
from handseg.model.presets import size_divisor
from handseg.runtime.errors import HandSegError


@dataclass(frozen=True)
class EngineRequest:
    """The engine asked for: ``backend`` (None: the config's; ``auto``: see the module docstring), the static tile
    ``batch`` and the ``precision`` (None: the config's), and ``source``, the config file it comes from (recorded
    in the manifest)."""

    backend: str | None = None
    batch: int | None = None
    precision: str | None = None
    source: str = "config"


def _export(cfg: EvalConfig, spec: InputSpec, job: EngineJob, net: LoadedCheckpoint):
    """``net``'s network exported for (job.batch, channels, side, side) of ``spec``."""
    side = spec.model_size
    return export_logits(net.model, (job.batch, spec.channels, side, side), size_divisor(net.model_cfg),
                         job.precision, cfg.device, source=job.source)


def _engine(cfg: EvalConfig, spec: InputSpec, job: EngineJob, path: Path) -> Engine:
    """The compiled engine file ``path`` loaded as an :class:`Engine` of ``job``."""
    return Engine(fn=require(job.backend, cfg.device).load(path, cfg.device), backend=job.backend,
                  precision=job.precision, device=cfg.device, batch_size=job.batch, side=spec.model_size, path=path)


def _compile(cfg: EvalConfig, ckpt: LoadedCheckpoint, spec: InputSpec, job: EngineJob,
             net: LoadedCheckpoint | None = None) -> Engine:
    """Export and compile one network (``net``'s, default ``ckpt``'s, seeing images as ``spec`` says) for
    (job.batch, channels, side, side) into ``ckpt``'s engine file for ``job``; the engine, not yet trusted (no
    manifest)."""
    path = engine_path(cfg, ckpt, job.backend, job.batch, job.precision, job.part)
    require(job.backend, cfg.device).compile(
        _export(cfg, spec, job, net or ckpt), example_input(job.batch, spec.model_size, job.precision, cfg.device,
                                                            spec.channels),
        path, cfg.device, cfg.optimization_level if job.backend == "tensorrt" else None)
    return _engine(cfg, spec, job, path)


def _compile_saved(saved: str, out: str, backend: str, device: str, threads: int) -> None:
    """In a worker process: compile the exported program saved at ``saved`` into ``out`` (AOTInductor takes shapes
    and device from the program) with the parent's number of threads (Inductor's CPU kernels are written for
    it)."""
    import torch

    torch.set_num_threads(threads)
    require(backend, device).compile(torch.export.load(saved), None, Path(out), device, None)


def _compile_cascade(cfg: EvalConfig, ckpt: LoadedCheckpoint, job: EngineJob) -> tuple[Engine, Engine]:
    """(stage 1, stage 2) engines of a cascade. On a CPU with AOTInductor the two compiles run side by side (each
    is single-threaded: about 15 s apiece for the demo's networks): stage 1 in a spawned process, from its saved
    export, while this process compiles stage 2. Elsewhere (a GPU's TensorRT build wants the device to itself) one
    after the other."""
    prior_job = replace(job, batch=1, part="prior")
    if cfg.device != "cpu" or job.backend != "aot_inductor" or (os.cpu_count() or 1) < 2:
        return _compile(cfg, ckpt, ckpt.spec.prior, prior_job, net=ckpt.prior), _compile(cfg, ckpt, ckpt.spec, job)
    import torch

    path = engine_path(cfg, ckpt, job.backend, 1, job.precision, "prior")
    with tempfile.TemporaryDirectory(prefix="handseg_export_") as tmp:
        saved = Path(tmp) / "prior.pt2"
        torch.export.save(_export(cfg, ckpt.spec.prior, prior_job, ckpt.prior), saved)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            prior_done = pool.submit(_compile_saved, str(saved), str(path), job.backend, cfg.device,
                                     torch.get_num_threads())
            engine = _compile(cfg, ckpt, ckpt.spec, job)
            prior_done.result()
    return _engine(cfg, ckpt.spec.prior, prior_job, path), engine


def _manifest(cfg: EvalConfig, ckpt: LoadedCheckpoint, spec: InputSpec, engine: Engine, agreement: dict | None,
              prior: Engine | None = None) -> dict:
    x = example_input(engine.batch_size, engine.side, "fp32", cfg.device, spec.channels)
    paired = None if prior is None else {"engine": prior.path.name,
                                         "source_sha256": ckpt.prior.weights_sha256}
    manifest = EngineRecord(
        engine_path=engine.path, backend=engine.backend, precision=engine.precision, batch_size=engine.batch_size,
        side=engine.side, output_shape=list(engine(x).shape), input_spec=spec, model_cfg=ckpt.model_cfg,
        checkpoint=ckpt.folder, checkpoint_sha256=ckpt.weights_sha256, device=cfg.device,
        optimization_level=cfg.optimization_level if engine.backend == "tensorrt" else None, agreement=agreement,
        prior=paired,
    ).manifest()
    if engine.tail is not None:
        manifest["tail"] = {"engine": engine.tail.path.name, "batch_size": engine.tail.batch_size}
    write_manifest(engine.path, manifest)
    return manifest


def build_engine(cfg: EvalConfig, ckpt: LoadedCheckpoint, image: np.ndarray,
                 request: EngineRequest = EngineRequest()) -> tuple[Path, dict]:
    """Compile ``ckpt`` as ``request`` asks, for (batch, channels, side, side) (and a cascade's stage 1), and write
    engines + manifests; returns (engine path, manifest). Agreement with eager fp32 is measured on ``image``
    (H, W) uint8, through the whole inference path (both parts for a cascade). ``auto``: see the module docstring."""
    requested = request.backend or cfg.backend
    name = resolve_backend(requested, cfg.device)
    if not require(name, cfg.device).compiled:  # fail before the export, with the one-line hint
        raise ValueError(f"{name} needs no engine")
    job = EngineJob(name, request.batch or cfg.batch_size_eval, request.precision or cfg.precision, request.source)
    try:
        return _build(cfg, ckpt, image, job)
    except Exception as exc:  # noqa: BLE001 - whatever TensorRT raises; other backends' errors pass unchanged
        if name != "tensorrt":
            raise
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if requested != "auto":
            raise HandSegError(f"TensorRT could not compile {ckpt.folder} ({reason}); use --backend aot_inductor "
                               "instead") from None
    print(f"backend auto: TensorRT could not compile {ckpt.folder} ({reason}); using aot_inductor", file=sys.stderr,
          flush=True)
    return _build(cfg, ckpt, image, replace(job, backend="aot_inductor"))


def _build(cfg: EvalConfig, ckpt: LoadedCheckpoint, image: np.ndarray, job: EngineJob) -> tuple[Path, dict]:
    """Compile ``job`` and write engines + manifests (see :func:`build_engine`)."""
    prior = None
    if ckpt.prior is not None:  # its engine file is named after the cascade's checkpoint, with the part "prior"
        prior, engine = _compile_cascade(cfg, ckpt, job)
        _manifest(cfg, ckpt.prior, ckpt.spec.prior, prior, agreement=None)
    else:
        engine = _compile(cfg, ckpt, ckpt.spec, job)
    engine.prior = prior
    if job.batch > 1:  # the remainder of a batch runs at batch 1 (also the batch-1 engine of these settings)
        engine.tail = _compile(cfg, ckpt, ckpt.spec, replace(job, batch=1))
        _manifest(cfg, ckpt, ckpt.spec, engine.tail, agreement=None, prior=prior)
    ref = eager_engine(ckpt.model, "fp32", cfg.device, prior=ckpt.prior.model if ckpt.prior else None)
    agreement = compare((engine, eval_settings(cfg, ckpt, engine, hand_norm=False)),
                        (ref, eval_settings(cfg, ckpt, ref, hand_norm=False)), image, cfg.device)
    return engine.path, _manifest(cfg, ckpt, ckpt.spec, engine, agreement, prior)
