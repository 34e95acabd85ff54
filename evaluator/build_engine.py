"""Build one engine: export the checkpoint, compile (AOTInductor or Torch-TensorRT), measure, write the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluator.agreement import compare
from evaluator.config import EvalConfig, engine_input_side, resolve_backend
from evaluator.engines import Engine, eager_engine, engine_path, inference_settings, load_compiled
from evaluator.export import example_input, export_logits
from evaluator.manifest import build_manifest, write_manifest


def build_engine(
    cfg: EvalConfig,
    bundle,
    image: np.ndarray,
    backend: str | None = None,
    batch: int | None = None,
    precision: str | None = None,
    source: str = "config",
) -> tuple[Path, dict]:
    """Compile the checkpoint in ``bundle`` for (batch, 3, side, side) and write engine + manifest.

    Returns (engine path, manifest). Agreement with eager fp32 is measured on ``image`` (H, W) uint8.
    """
    from handseg.checkpoint import checkpoint_sha256
    from handseg.models import size_divisor

    device = cfg.device
    backend = resolve_backend(backend or cfg.backend, device)
    if backend == "eager":
        raise ValueError("eager needs no engine")
    precision = precision or cfg.precision
    batch = batch or cfg.batch_size_eval
    model, _info, model_cfg, spec = bundle
    side = engine_input_side(spec)
    if backend == "tensorrt":
        from evaluator.compile_trt import require_tensorrt

        require_tensorrt(device)  # fail before the export, with the one-line hint
    exported = export_logits(model, batch, side, size_divisor(model_cfg), precision, device, source=source)
    path = engine_path(cfg, backend, batch, side, precision)
    if backend == "aot_inductor":
        from evaluator.compile_aoti import compile_aoti

        compile_aoti(exported, path)
    else:
        from evaluator.compile_trt import compile_trt

        example = example_input(batch, side, precision, device)
        compile_trt(exported, example, path, device, cfg.optimization_level)
    model.float()  # export may have cast the shared module; the reference stays fp32
    engine = Engine(
        fn=load_compiled(path, backend, device),
        backend=backend,
        precision=precision,
        device=device,
        batch_size=batch,
        side=side,
        path=path,
    )
    ref = eager_engine(model, "fp32", device)
    agreement = compare(engine, ref, image, inference_settings(cfg, spec, engine), inference_settings(cfg, spec, ref), device)
    out_shape = list(engine(example_input(batch, side, "fp32", device)).shape)
    manifest = build_manifest(
        engine_path=path,
        backend=backend,
        precision=precision,
        batch_size=batch,
        side=side,
        output_shape=out_shape,
        input_spec=spec,
        model_cfg=model_cfg,
        checkpoint=cfg.checkpoint,
        checkpoint_sha256=checkpoint_sha256(cfg.checkpoint),
        device=device,
        optimization_level=cfg.optimization_level if backend == "tensorrt" else None,
        agreement=agreement,
    )
    write_manifest(path, manifest)
    return path, manifest
