"""Efficiency benchmark: latency percentiles, throughput, peak memory and agreement for every available engine.

Timing: CUDA events around each call on GPU (after a synchronise), ``time.perf_counter`` on CPU. The per-tile
latency starts from a float32 tile batch already on the device (the host-to-device copy is not in it); the
whole-image time starts from the PNG on disk (decoding and the upload of the image are in it, in the decode and
preprocess phases). Peak memory: on CUDA ``max_memory_allocated`` after ``reset_peak_memory_stats`` (what torch's
allocator holds) and, beside it, the device's used memory (``torch.cuda.mem_get_info``: total - free, which also
sees what TensorRT and AOTInductor allocate outside torch's allocator, and other processes on the GPU) sampled by a
background thread every 2 ms; on CPU the same thread samples the process RSS (psutil). Both are reported as the
maximum during the measurement and its increase over the value just before it.
"""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from matplotlib.figure import Figure

from evaluator.agreement import mask_dice, tile_batch
from evaluator.backends import BACKENDS
from evaluator.build_engine import build_engine
from evaluator.config import EvalConfig, resolve_postprocess, resolve_thresholds
from evaluator.engines import efficiency_batches, eval_settings, load_engine
from evaluator.manifest import StaleEngineError
from evaluator.memory_peak import PeakRSS, cuda_memory
from evaluator.report import save_figure
from handseg.data.image_io import read_image, write_png
from handseg.format.class_masks import ClassMasks
from handseg.inference.engine import Engine, eager_engine
from handseg.inference.phase_timer import PhaseTimer, phase
from handseg.inference.pipeline import predict_masks
from handseg.model.checkpoint import LoadedCheckpoint
from handseg.phantom import render_hand

PHASES = ("decode", "preprocess", "engine", "blend", "threshold")
CPU_MEMORY_METHOD = "peak RSS of the process, psutil sampling thread every 2 ms during the measurement"
CUDA_MEMORY_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats; device MiB: the GPU's used "
                      "memory (mem_get_info, all allocations incl. TensorRT/AOTInductor), sampled every 2 ms")
TIMING_NOTE = ("tile latency from a float32 tile batch already on the device (host-to-device copy excluded); "
               "whole image from the PNG on disk (decode and upload included)")


@dataclass
class Measurement:
    """One engine at one tile batch. Times in milliseconds, memory in MiB."""

    engine: str
    batch: int
    tile_ms_p50: float  # per tile: call latency / batch
    tile_ms_p90: float
    tile_ms_p99: float
    batch_ms_p50: float
    tiles_per_s: float
    image_ms: float  # whole image: decode, tiling, engine, blending, thresholds and RLE
    images_per_s: float
    peak_mem_mib: float
    peak_mem_increase_mib: float
    decode_ms: float  # the phases of the whole image (PhaseTimer; they add up to about image_ms)
    preprocess_ms: float
    engine_ms: float
    blend_ms: float
    threshold_rle_ms: float
    model_share: float  # engine_ms / the sum of the phases
    max_abs_diff_logits: float
    mask_dice_min: float
    mask_dice_mean: float
    device_mem_peak_mib: float | None = None  # CUDA: the device's used memory (see the module docstring)
    device_mem_increase_mib: float | None = None


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


def whole_image(engine, png: Path, settings, device: str, thresholds, postprocess=None,
                timer: PhaseTimer | None = None) -> tuple[ClassMasks, list[str]]:
    """The deployed path for one image file: decode, preprocess, engine, blend, threshold, RLE (the phases
    ``timer`` collects). Returns (masks, rles)."""
    with phase(timer, "decode"):
        image = read_image(png)
    masks = predict_masks(engine, image, settings, thresholds, device, postprocess, timer)
    with phase(timer, "threshold"):
        rles = masks.rle()
    return masks, rles


def measure(engine: Engine, cfg: EvalConfig, ckpt: LoadedCheckpoint, png: Path, image: np.ndarray, batch: int,
            ref_logits, ref_masks, thresholds, postprocess=None) -> Measurement:
    """Time and measure ``engine`` at tile batch ``batch`` against the eager fp32 references."""
    eff, device = cfg.efficiency, engine.device
    settings = eval_settings(cfg, ckpt, engine)
    settings.batch_size = batch
    x = tile_batch(image, ckpt.spec, batch, ckpt.spec.model_size).to(device)  # on the device before timing
    with torch.inference_mode():
        for _ in range(eff.warmup):
            engine(x)
        calls = np.asarray(timed(lambda: engine(x), eff.iters, device))
        diff = float((engine(x).cpu() - ref_logits).abs().max().item())
    whole_image(engine, png, settings, device, thresholds, postprocess)  # warm-up of the whole-image path
    timer = PhaseTimer(device)

    def run_image():
        return whole_image(engine, png, settings, device, thresholds, postprocess, timer=timer)

    mem = {}
    if device.startswith("cuda"):
        with cuda_memory(device) as mem:
            image_ms = float(np.mean(timed(run_image, eff.image_iters, device)))
        peak, increase = mem["peak"], mem["increase"]
    else:
        with PeakRSS() as rss:
            image_ms = float(np.mean(timed(run_image, eff.image_iters, device)))
        peak, increase = rss.peak, rss.peak - rss.base
    phases = {name: 1000.0 * timer.seconds.get(name, 0.0) / eff.image_iters for name in PHASES}
    masks, _ = whole_image(engine, png, settings, device, thresholds, postprocess)
    dice = mask_dice(masks.to_dense().cpu(), ref_masks)
    tiles = calls / batch
    return Measurement(
        engine=engine.name,
        batch=batch,
        tile_ms_p50=float(np.percentile(tiles, 50)),
        tile_ms_p90=float(np.percentile(tiles, 90)),
        tile_ms_p99=float(np.percentile(tiles, 99)),
        batch_ms_p50=float(np.percentile(calls, 50)),
        tiles_per_s=float(1000.0 * batch / np.median(calls)),
        image_ms=image_ms,
        images_per_s=1000.0 / image_ms,
        peak_mem_mib=peak / 2**20,
        peak_mem_increase_mib=increase / 2**20,
        decode_ms=phases["decode"],
        preprocess_ms=phases["preprocess"],
        engine_ms=phases["engine"],
        blend_ms=phases["blend"],
        threshold_rle_ms=phases["threshold"],
        model_share=phases["engine"] / max(sum(phases.values()), 1e-9),
        max_abs_diff_logits=diff,
        mask_dice_min=float(dice.min()),
        mask_dice_mean=float(dice.mean()),
        device_mem_peak_mib=mem["device_peak"] / 2**20 if mem else None,
        device_mem_increase_mib=mem["device_increase"] / 2**20 if mem else None,
    )


def available_engines(cfg: EvalConfig) -> list[str]:
    """Engines to measure: the config's list, else eager (fp32 and autocast) and every compiled backend that
    can run here."""
    if cfg.efficiency.backends:
        return list(cfg.efficiency.backends)
    compiled = [n for n, b in BACKENDS.items() if b.compiled and b.missing(cfg.device) is None]
    return ["eager_fp32", "eager_autocast", *compiled]


def engine_named(name: str, cfg: EvalConfig, ckpt: LoadedCheckpoint, batch: int, image) -> Engine | None:
    """The engine called ``name`` (see :func:`available_engines`); a missing AOTInductor engine is compiled
    when ``efficiency.compile_missing`` allows. A compiled engine that is missing (e.g. TensorRT, where
    ``tensorrt_aot.py`` fell back to AOTInductor) is skipped with one line when the backends were not listed in
    the config (None), and an error when they were."""
    prior = ckpt.prior.model if ckpt.prior else None
    if name == "eager_fp32":
        return eager_engine(ckpt.model, "fp32", cfg.device, prior=prior)
    if name == "eager_autocast":
        return eager_engine(ckpt.model, "fp16" if cfg.device.startswith("cuda") else "bf16", cfg.device, prior=prior)
    try:
        return load_engine(cfg, ckpt, backend=name, batch=batch)
    except StaleEngineError as exc:
        if not cfg.efficiency.compile_missing or name != "aot_inductor":
            if cfg.efficiency.backends or "no " not in str(exc):
                raise
            print(f"  {name}: skipped ({exc})", file=sys.stderr)
            return None
    build_engine(cfg, ckpt, image, backend=name, batch=batch)
    return load_engine(cfg, ckpt, backend=name, batch=batch)


def run_efficiency(cfg: EvalConfig, ckpt: LoadedCheckpoint, progress: bool = True) -> dict:
    """Measure every available engine at each tile batch of :func:`evaluator.engines.efficiency_batches`; returns
    the JSON-ready result."""
    spec = ckpt.spec
    thresholds, postprocess = resolve_thresholds(cfg), resolve_postprocess(cfg)
    image, _ = render_hand(0, cfg.efficiency.image_size, "R")
    batches = efficiency_batches(cfg)
    ref = eager_engine(ckpt.model, "fp32", cfg.device, prior=ckpt.prior.model if ckpt.prior else None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        png = write_png(Path(tmp) / "hand.png", image)  # the whole-image time includes decoding a real file
        ref_masks = whole_image(ref, png, eval_settings(cfg, ckpt, ref), cfg.device, thresholds, postprocess)[0]
        ref_masks = ref_masks.to_dense().cpu()
        for batch in batches:
            x = tile_batch(image, spec, batch, spec.model_size)
            with torch.inference_mode():
                ref_logits = ref(x).cpu()
            for name in available_engines(cfg):
                engine = engine_named(name, cfg, ckpt, batch, image)
                if engine is None:
                    continue
                row = measure(engine, cfg, ckpt, png, image, batch, ref_logits, ref_masks, thresholds, postprocess)
                if progress:
                    print(f"  {row.engine:<22} batch {batch}: {row.image_ms:9.1f} ms/image, "
                          f"model {100 * row.model_share:4.1f}%, {row.peak_mem_mib:8.1f} MiB")
                rows.append(asdict(row))
    return {
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "checkpoint": str(ckpt.folder),
        "input": spec.to_dict(),
        "image_size": cfg.efficiency.image_size,
        "warmup": cfg.efficiency.warmup,
        "iters": cfg.efficiency.iters,
        "image_iters": cfg.efficiency.image_iters,
        "memory_method": CUDA_MEMORY_METHOD if cfg.device.startswith("cuda") else CPU_MEMORY_METHOD,
        "timing": TIMING_NOTE,
        "results": rows,
    }


def cpu_name() -> str:
    return platform.processor() or platform.machine()


COLUMNS = [
    ("engine", "engine", "{}"), ("batch", "batch", "{}"), ("tile_ms_p50", "tile p50 ms", "{:.2f}"),
    ("tile_ms_p90", "tile p90 ms", "{:.2f}"), ("tile_ms_p99", "tile p99 ms", "{:.2f}"),
    ("image_ms", "image ms", "{:.1f}"), ("images_per_s", "images/s", "{:.3f}"),
    ("peak_mem_mib", "peak MiB", "{:.0f}"), ("max_abs_diff_logits", "max |diff|", "{:.2e}"),
    ("mask_dice_min", "mask Dice min", "{:.5f}"),
]
PHASE_COLUMNS = [
    ("engine", "engine", "{}"), ("batch", "batch", "{}"), ("decode_ms", "decode ms", "{:.1f}"),
    ("preprocess_ms", "preprocess ms", "{:.1f}"), ("engine_ms", "engine ms", "{:.1f}"),
    ("blend_ms", "blend ms", "{:.1f}"), ("threshold_rle_ms", "threshold + RLE ms", "{:.1f}"),
    ("model_share", "model share", "{:.0%}"),
]


def _markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| " + " | ".join(c[1] for c in columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return lines + ["| " + " | ".join(fmt.format(row[key]) for key, _t, fmt in columns) + " |" for row in rows]


def format_table(result: dict) -> str:
    """Markdown: the engines table (on CUDA with the device's used memory too), then where one whole image's time
    goes (phase by phase)."""
    rows = result["results"]
    columns = COLUMNS
    if any(r.get("device_mem_peak_mib") is not None for r in rows):
        columns = [*COLUMNS[:8], ("device_mem_peak_mib", "device MiB", "{:.0f}"), *COLUMNS[8:]]
    note = (
        f"\n{result['image_size']}x{result['image_size']} image on {result['device']} ({result['device_name']}), "
        f"{result['torch_threads']} threads; whole-image time: decoding the PNG, preprocessing, the engine, "
        f"blending, thresholds and RLE; timing: {result.get('timing', 'not recorded')}; memory: "
        f"{result['memory_method']}.\n"
    )
    phases = ["", "Where one whole image's time goes (mean per image):", ""] + _markdown(rows, PHASE_COLUMNS)
    return "\n".join(_markdown(rows, columns)) + "\n" + note + "\n".join(phases) + "\n"


def efficiency_chart(result: dict, path) -> None:
    """Two panels: whole-image latency and peak memory per engine and batch."""
    rows = result["results"]
    labels = [f"{r['engine']}\nb{r['batch']}" for r in rows]
    fig = Figure(figsize=(max(8, 1.4 * len(rows) * 2), 4), dpi=100)
    axes = fig.subplots(1, 2)
    axes[0].bar(range(len(rows)), [r["image_ms"] for r in rows], color="#4c72b0")
    axes[0].set_ylabel(f"ms per {result['image_size']}px image")
    axes[1].bar(range(len(rows)), [r["peak_mem_mib"] for r in rows], color="#dd8452")
    axes[1].set_ylabel("peak memory (MiB)")
    for ax in axes:
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
    save_figure(fig, path)
