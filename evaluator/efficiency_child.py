"""One engine's efficiency, measured in the process that deploys it (``python -m evaluator.efficiency_child``).

:func:`evaluator.efficiency.run_efficiency` starts one such process per engine and tile batch, so that the peak
resident memory is what a deployment holds: a compiled engine is loaded as the evaluator loads it, without the model,
its modelling code or the training code; the eager rows build the model, as eager inference must. The process:

* times the engine on a batch of real tiles (``tile_*``: per tile; a cascade's stage 2, and ``stage1_call_ms``
  for its stage 1 on one whole image);
* times one whole image through the deployed path (decode the PNG, then
  :func:`handseg.inference.pipeline.predict_masks` with the evaluation's settings, then RLE), phase by phase
  (:class:`~handseg.inference.phase_timer.PhaseTimer`), with the tiles a cascade's stage 2 ran on;
* records its peak resident set (``VmHWM``, the whole process) and writes ``row.json``, the tile logits
  (``logits.pt``) and the image's RLE strings (``rles.json``) to ``--out`` for the agreement the parent measures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from evaluator.agreement import tile_batch
from evaluator.config import EvalConfig, load_eval_config, resolve_postprocess, resolve_thresholds
from evaluator.engines import eval_settings, load_engine, load_eval_checkpoint
from evaluator.memory_peak import cuda_memory, status_mib
from handseg.data.image_io import read_image
from handseg.inference.engine import Engine, eager_engine
from handseg.inference.phase_timer import PhaseTimer, phase
from handseg.inference.pipeline import predict_masks
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.checkpoint import LoadedCheckpoint
from handseg.runtime.overrides import add_set_argument

PHASES = ("decode", "preprocess", "stage1", "stage2", "blend", "threshold")


def timed(fn: Callable[[], object], iters: int, device: str) -> list[float]:
    """Milliseconds of ``iters`` calls of ``fn``, each properly synchronised on CUDA."""
    times = []
    for _ in range(iters):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(float(start.elapsed_time(end)))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000.0)
    return times


def engine_named(name: str, cfg: EvalConfig, ckpt: LoadedCheckpoint, batch: int) -> Engine:
    """``eager_fp32``, ``eager_autocast`` (bf16 on CPU, fp16 on CUDA) or a compiled backend's engine pair at
    ``batch``, loaded as the evaluator loads it (it must exist: the parent compiles what is missing)."""
    prior = ckpt.prior.model if ckpt.prior is not None and name.startswith("eager") else None
    if name == "eager_fp32":
        return eager_engine(ckpt.model, "fp32", cfg.device, prior=prior)
    if name == "eager_autocast":
        return eager_engine(ckpt.model, "fp16" if cfg.device.startswith("cuda") else "bf16", cfg.device, prior=prior)
    return load_engine(cfg, ckpt, backend=name, batch=batch)


def whole_image(call: InferenceCall, png: Path, timer: PhaseTimer | None = None) -> list[str]:
    """The deployed path for one image file with ``call`` (engine on its device, settings, thresholds,
    post-processing): decode, predict (preprocess, stage 1, stage 2, blend, threshold, post-processing), RLE;
    returns the 29 RLE strings."""
    with phase(timer, "decode"):
        image = read_image(png)
    masks = predict_masks(call, image, timer)
    with phase(timer, "threshold"):
        return masks.rle()


def tile_latency(engine: Engine, x: torch.Tensor, cfg: EvalConfig, prior_side: int | None) -> tuple[dict, torch.Tensor]:
    """Per-tile latency of ``engine`` on the batch ``x`` (warm-up, then ``efficiency.iters`` calls); a cascade's
    stage 1 is timed on one whole image (``prior_side`` squared) too. Returns (figures, the logits of ``x`` on the
    CPU)."""
    eff, device, batch = cfg.efficiency, engine.device, x.shape[0]
    x = x.to(device)
    with torch.inference_mode():
        for _ in range(eff.warmup):
            engine(x)
        calls = np.asarray(timed(lambda: engine(x), eff.iters, device))
        logits = engine(x).cpu()
        stage1 = None
        if engine.prior is not None and prior_side:
            whole = torch.zeros((1, 3, prior_side, prior_side), device=device)
            engine.prior(whole)
            stage1 = float(np.median(timed(lambda: engine.prior(whole), eff.iters, device)))
    tiles = calls / batch
    return {"tile_ms_p50": float(np.percentile(tiles, 50)), "tile_ms_p90": float(np.percentile(tiles, 90)),
            "tile_ms_p99": float(np.percentile(tiles, 99)), "batch_ms_p50": float(np.percentile(calls, 50)),
            "tiles_per_s": float(1000.0 * batch / np.median(calls)), "stage1_call_ms": stage1}, logits


def image_figures(engine: Engine, cfg: EvalConfig, settings: InferenceSettings, png: Path) -> tuple[dict, list[str]]:
    """Whole-image time (mean of ``efficiency.image_iters`` after one warm-up) and its phases, the tiles run and
    possible per image, and the peak memory (CPU: the process's ``VmHWM``; CUDA: torch's allocator and the device's
    used memory, :func:`evaluator.memory_peak.cuda_memory`)."""
    eff, device = cfg.efficiency, engine.device
    call = InferenceCall(engine, settings, device, resolve_thresholds(cfg), resolve_postprocess(cfg))
    rles = whole_image(call, png)  # warm-up, and the masks compared
    timer = PhaseTimer(device)
    n = eff.image_iters

    def run() -> float:
        return float(np.mean(timed(lambda: whole_image(call, png, timer), n, device)))

    device_mem = {}
    if device.startswith("cuda"):
        with cuda_memory(device) as mem:
            image_ms = run()
        peak, increase = mem["peak"] / 2**20, mem["increase"] / 2**20
        device_mem = {"device_mem_peak_mib": mem["device_peak"] / 2**20,
                      "device_mem_increase_mib": mem["device_increase"] / 2**20}
    else:
        before = status_mib("VmRSS") or 0.0
        image_ms = run()
        peak = status_mib("VmHWM") or 0.0
        increase = max(peak - before, 0.0)
    phases = {name: 1000.0 * timer.seconds.get(name, 0.0) / n for name in PHASES}
    model = phases["stage1"] + phases["stage2"]
    return {"image_ms": image_ms, "images_per_s": 1000.0 / image_ms, "peak_mem_mib": peak,
            "peak_mem_increase_mib": increase, **{f"{k}_ms": v for k, v in phases.items() if k != "threshold"},
            "threshold_rle_ms": phases["threshold"], "engine_ms": model,
            "postprocess_ms": phases["blend"] + phases["threshold"],
            "model_share": model / max(sum(phases.values()), 1e-9),
            "tiles_run": timer.counts.get("tiles_run", 0) / n,
            "tiles_possible": timer.counts.get("tiles_possible", 0) / n,
            "tile_selection": settings.selection is not None, **device_mem}, rles


def measure(cfg: EvalConfig, ckpt: LoadedCheckpoint, name: str, batch: int, png: Path, out: Path) -> dict:
    """Every figure of ``name`` at tile ``batch`` on the image ``png``; writes ``row.json``, ``logits.pt`` and
    ``rles.json`` to ``out``."""
    engine = engine_named(name, cfg, ckpt, batch)
    settings = eval_settings(cfg, ckpt, engine)
    settings.batch_size = batch
    image = read_image(png)
    prior_side = None if ckpt.spec.prior is None else ckpt.spec.prior.model_size
    tiles, logits = tile_latency(engine, tile_batch(image, ckpt.spec, batch, ckpt.spec.model_size), cfg, prior_side)
    figures, rles = image_figures(engine, cfg, settings, png)
    row = {"engine": engine.name, "batch": batch, **tiles, **figures, "torch_threads": torch.get_num_threads(),
           "model_code_loaded": any(m.startswith("transformers.models.") and ".modeling_" in m and ".auto." not in m
                                    for m in sys.modules)}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(logits, out / "logits.pt")
    (out / "rles.json").write_text(json.dumps(rles))
    (out / "row.json").write_text(json.dumps(row))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg-path", required=True)
    p.add_argument("--checkpoint", required=True, help="the checkpoint folder the parent chose")
    p.add_argument("--engine", required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--image", required=True, help="the PNG of the whole-image measurement")
    p.add_argument("--out", required=True)
    add_set_argument(p)
    args = p.parse_args(argv)
    cfg = load_eval_config(args.cfg_path, overrides={"checkpoint": args.checkpoint}, sets=args.set)
    ckpt = load_eval_checkpoint(cfg, file=args.cfg_path, echo=False)
    measure(cfg, ckpt, args.engine, args.batch, Path(args.image), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
