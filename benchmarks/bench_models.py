"""The networks and engines of ``bench_inference.py``'s modes: the demo checkpoints (or random ``demo`` models
when they are not there), eager, or compiled with AOTInductor and loaded as the evaluator loads them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from handseg.inference.engine import Engine, eager_engine
from handseg.model.checkpoint import load_checkpoint
from handseg.model.factory import build_model, cascade_refiner
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig, size_divisor


def stage1_model(folder: str):
    """(model, model config, input spec, where it came from): the checkpoint, or a random `demo` SegFormer."""
    if (Path(folder) / "model.safetensors").is_file():
        ckpt = load_checkpoint(folder)
        return ckpt.model, ckpt.model_cfg, ckpt.spec, folder
    torch.manual_seed(0)
    cfg = ModelConfig(arch="segformer", preset="demo")
    return build_model(cfg).eval(), cfg, InputSpec(mode="resize", image_size=384, tile_size=384), "random demo model"


def mode_networks(mode: str, args) -> tuple[nn.Module, nn.Module | None, InputSpec, str, ModelConfig]:
    """The networks of a mode: (network, a cascade's stage-1 network or None, input spec, where the weights came
    from, the network's model config)."""
    model, cfg, spec, source = stage1_model(args.stage1)
    if mode == "resize":
        return model, None, spec, source, cfg
    if mode == "tile":
        tile = replace(spec, mode="tile", image_size=args.tile, tile_size=args.tile, overlap=0.25, prior=None)
        return model, None, tile, source, cfg
    if (Path(args.stage2) / "model.safetensors").is_file():
        ckpt = load_checkpoint(args.stage2, lazy=True)  # the model is read only for a cascade
        if ckpt.prior is not None:
            return ckpt.model, ckpt.prior.model, ckpt.spec, args.stage2, ckpt.model_cfg
    refiner, refiner_cfg = cascade_refiner(model, cfg)  # zero-initialised: predicts what stage 1 does
    spec2 = InputSpec(mode="tile", image_size=512, tile_size=512, overlap=0.25, prior=spec)
    return refiner, model, spec2, f"{source} + zero-initialised refiner (no cascade checkpoint)", refiner_cfg


def mode_engine(mode: str, args) -> tuple[Engine, InputSpec, str]:
    """The eager engine and input spec of a mode, and where its weights came from."""
    net, prior, spec, source, _ = mode_networks(mode, args)
    return eager_engine(net, prior=prior), spec, source


def compile_mode(mode: str, batches: list[int], args, folder: Path) -> None:
    """AOTInductor engines of a mode at each tile batch of ``batches`` (a cascade's stage 1 once, at batch 1) in
    ``folder``, with the input spec beside them, for ``deployed`` children."""
    from evaluator.compile_aoti import compile_aoti
    from evaluator.export import export_logits

    net, prior, spec, _, cfg = mode_networks(mode, args)
    if prior is not None:
        side = spec.prior.model_size
        compile_aoti(export_logits(prior, (1, 3, side, side), size_divisor(cfg)), None, folder / f"{mode}_prior.pt2")
    for batch in batches:
        side = spec.model_size
        compile_aoti(export_logits(net, (batch, spec.channels, side, side), size_divisor(cfg)), None,
                     folder / f"{mode}_b{batch}.pt2")
    (folder / f"{mode}_spec.json").write_text(json.dumps(spec.to_dict()))


def deployed_engine(mode: str, batch: int, folder: Path) -> tuple[Engine, InputSpec]:
    """The compiled engines of :func:`compile_mode`, loaded as the evaluator loads them (no model built)."""
    from evaluator.compile_aoti import load_aoti

    spec = InputSpec.from_dict(json.loads((folder / f"{mode}_spec.json").read_text()))
    path = folder / f"{mode}_b{batch}.pt2"
    engine = Engine(fn=load_aoti(path), backend="aot_inductor", batch_size=batch, side=spec.model_size, path=path)
    if spec.prior is not None:
        prior = folder / f"{mode}_prior.pt2"
        engine.prior = Engine(fn=load_aoti(prior), backend="aot_inductor", batch_size=1,
                              side=spec.prior.model_size, path=prior)
    tail = folder / f"{mode}_b1.pt2"
    if batch > 1 and tail.is_file():  # the remainder of a batch at batch 1, as the evaluator's engines do
        engine.tail = Engine(fn=load_aoti(tail), backend="aot_inductor", batch_size=1, side=spec.model_size, path=tail)
    return engine, spec
