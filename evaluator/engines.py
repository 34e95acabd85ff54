"""One interface for every engine: eager module, AOTInductor package or Torch-TensorRT program.

An :class:`Engine` is a callable (B, 3, h, w) float32 -> (B, 29, h', w') float32 logits. Compiled engines have a
static batch and tile; the engine pads a short batch with zeros and splits a long one, so callers may pass any
batch (``handseg.inference`` also pads when ``fixed_batch`` is set).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from evaluator.config import EvalConfig, engine_input_side, resolve_backend, resolve_input_spec
from evaluator.export import DTYPES
from evaluator.manifest import StaleEngineError, check_manifest, read_manifest
from handseg.errors import HandSegError

ENGINE_SUFFIX = {"aot_inductor": ".pt2", "tensorrt": ".ep"}


@dataclass
class Engine:
    """A logits function with what inference needs to know about it."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    backend: str  # eager | aot_inductor | tensorrt
    precision: str  # fp32 | fp16 | bf16
    device: str
    batch_size: int | None = None  # static batch of a compiled engine; None: any batch
    side: int | None = None  # static input side of a compiled engine
    autocast: bool = False  # eager: run under torch.autocast(precision)
    path: Path | None = None

    @property
    def name(self) -> str:
        return f"{self.backend}_{'autocast_' if self.autocast else ''}{self.precision}"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.autocast:
            dev = torch.device(self.device).type
            ctx = torch.autocast(dev, dtype=DTYPES[self.precision])
        else:
            ctx = contextlib.nullcontext()
            x = x.to(DTYPES[self.precision])
        with torch.inference_mode(), ctx:
            out = self.fn(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.float()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, h, w) float32 normalised -> (B, 29, h', w') float32 logits on the engine's device."""
        x = x.to(self.device)
        if self.side is not None and tuple(x.shape[-2:]) != (self.side, self.side):
            raise HandSegError(f"{self.name} engine takes {self.side}x{self.side} tiles, got {tuple(x.shape[-2:])}")
        b = self.batch_size
        if b is None or x.shape[0] == b:
            return self._run(x)
        outs = []
        for start in range(0, x.shape[0], b):
            chunk = x[start : start + b]
            n = chunk.shape[0]
            if n < b:
                chunk = torch.cat([chunk, chunk.new_zeros((b - n, *chunk.shape[1:]))])
            outs.append(self._run(chunk)[:n])
        return torch.cat(outs)


def load_bundle(cfg: EvalConfig, device: str | None = None):
    """(model, info, model_cfg, input_spec) of the config's checkpoint, with tile/overlap overrides applied."""
    from handseg.checkpoint import load_checkpoint
    from handseg.models import ModelConfig, input_spec_from_dict

    model, info = load_checkpoint(cfg.checkpoint, device=device or cfg.device)
    model.eval()
    model_cfg = ModelConfig(**info["model"])
    spec = resolve_input_spec(cfg, input_spec_from_dict(info["input"]))
    return model, info, model_cfg, spec


def eager_engine(model, precision: str = "fp32", device: str = "cpu") -> Engine:
    """The PyTorch model as an engine; fp16/bf16 run under autocast (weights stay fp32)."""
    from handseg.models import LogitsModule

    module = LogitsModule(model).eval().to(device)
    return Engine(fn=module, backend="eager", precision=precision, device=device, autocast=precision != "fp32")


def engine_path(cfg: EvalConfig, backend: str, batch: int, side: int, precision: str | None = None) -> Path:
    """Where the engine for these settings lives: ``<engine_dir>/<run>-<ckpt>_<backend>_<prec>_b<B>_t<side><ext>``."""
    if cfg.engine is not None and batch == cfg.batch_size_eval and (precision or cfg.precision) == cfg.precision:
        return Path(cfg.engine)
    ckpt = Path(cfg.checkpoint).resolve()
    stem = f"{ckpt.parent.name}-{ckpt.name}" if ckpt.parent.name else ckpt.name
    return Path(cfg.engine_dir) / f"{stem}_{backend}_{precision or cfg.precision}_b{batch}_t{side}{ENGINE_SUFFIX[backend]}"


def load_compiled(path: Path, backend: str, device: str):
    """Load an AOTInductor package or a Torch-TensorRT program from ``path``."""
    if backend == "aot_inductor":
        from evaluator.compile_aoti import load_aoti

        return load_aoti(path, device)
    from evaluator.compile_trt import load_trt

    return load_trt(path, device)


def load_engine(
    cfg: EvalConfig,
    backend: str | None = None,
    batch: int | None = None,
    precision: str | None = None,
    device: str | None = None,
    bundle=None,
) -> Engine:
    """The engine the config asks for; a compiled one must exist and its manifest must match the checkpoint."""
    device = device or cfg.device
    backend = resolve_backend(backend or cfg.backend, device)
    precision = precision or cfg.precision
    if backend == "tensorrt":
        from evaluator.compile_trt import require_tensorrt

        require_tensorrt(device)
    if bundle is None:
        bundle = load_bundle(cfg, device)
    model, _info, _model_cfg, spec = bundle
    if backend == "eager":
        return eager_engine(model, precision, device)
    batch = batch or cfg.batch_size_eval
    side = engine_input_side(spec)
    path = engine_path(cfg, backend, batch, side, precision)
    if not path.is_file():
        raise StaleEngineError(
            f"{path}: no {backend} engine for batch {batch}, tile {side}, {precision}; "
            f"compile it with `python tensorrt_aot.py --backend {backend}` or use backend: eager"
        )
    manifest = read_manifest(path)
    check_manifest(
        manifest,
        cfg.checkpoint,
        expect={"backend": backend, "precision": precision, "input_shape": [batch, 3, side, side]},
    )
    fn = load_compiled(path, backend, device)
    return Engine(fn=fn, backend=backend, precision=precision, device=device, batch_size=batch, side=side, path=path)


def inference_settings(cfg: EvalConfig, spec, engine: Engine):
    """InferenceSettings for ``engine``: the config's tile batch, blending and TTA at the checkpoint's input scale."""
    from handseg.inference import InferenceSettings

    return InferenceSettings(
        input=spec,
        batch_size=engine.batch_size or cfg.batch_size_eval,
        blend=cfg.blend,
        flip_tta=cfg.flip_tta,
        fixed_batch=engine.batch_size is not None,
        # half-precision blending buffers on GPU for reduced-precision engines (halves 2048x2048x29 memory)
        accumulate_dtype="float16" if engine.device.startswith("cuda") and engine.precision != "fp32" else "float32",
    )
