"""Build one engine: export the checkpoint, compile it with its backend, measure agreement, write the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluator.agreement import compare
from evaluator.backends import require, resolve_backend
from evaluator.config import EvalConfig
from evaluator.engines import engine_path, eval_settings
from evaluator.export import example_input, export_logits
from evaluator.manifest import build_manifest, write_manifest
from handseg.checkpoint import LoadedCheckpoint, checkpoint_sha256
from handseg.engine import Engine, eager_engine
from handseg.models import size_divisor


def build_engine(cfg: EvalConfig, ckpt: LoadedCheckpoint, image: np.ndarray, backend: str | None = None,
                 batch: int | None = None, precision: str | None = None, source: str = "config") -> tuple[Path, dict]:
    """Compile ``ckpt`` for (batch, 3, side, side) and write engine + manifest; returns (engine path, manifest).
    Agreement with eager fp32 is measured on ``image`` (H, W) uint8."""
    device = cfg.device
    name = resolve_backend(backend or cfg.backend, device)
    kind = require(name, device)  # fail before the export, with the one-line hint
    if not kind.compiled:
        raise ValueError(f"{name} needs no engine")
    precision = precision or cfg.precision
    batch = batch or cfg.batch_size_eval
    side = ckpt.spec.model_size
    exported = export_logits(ckpt.model, batch, side, size_divisor(ckpt.model_cfg), precision, device, source=source)
    path = engine_path(cfg, ckpt, name, batch, precision)
    kind.compile(exported, example_input(batch, side, precision, device), path, device,
                 cfg.optimization_level if name == "tensorrt" else None)
    ckpt.model.float()  # export may have cast the shared module; the reference stays fp32
    # Loaded directly: its manifest (which load_engine checks) is written only once agreement is measured.
    engine = Engine(fn=kind.load(path, device), backend=name, precision=precision, device=device, batch_size=batch,
                    side=side, path=path)
    ref = eager_engine(ckpt.model, "fp32", device)
    agreement = compare(engine, ref, image, eval_settings(cfg, ckpt, engine), eval_settings(cfg, ckpt, ref), device)
    out_shape = list(engine(example_input(batch, side, "fp32", device)).shape)
    manifest = build_manifest(
        engine_path=path, backend=name, precision=precision, batch_size=batch, side=side, output_shape=out_shape,
        input_spec=ckpt.spec, model_cfg=ckpt.model_cfg, checkpoint=ckpt.folder,
        checkpoint_sha256=checkpoint_sha256(ckpt.folder), device=device,
        optimization_level=cfg.optimization_level if name == "tensorrt" else None, agreement=agreement,
    )
    write_manifest(path, manifest)
    return path, manifest
