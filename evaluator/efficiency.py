"""Efficiency benchmark: latency, throughput, peak memory and agreement of every available engine, each measured in
the process that deploys it.

:func:`run_efficiency` compiles what is missing, then starts one process per engine and tile batch
(:mod:`evaluator.efficiency_child`): a compiled engine is loaded there as the evaluator loads it (no model, no
modelling or training code), so its peak resident memory is the deployed figure. Each process times the engine on
a batch of tiles and one whole image through the deployed path, phase by phase: decode, preprocess, stage 1 (the
whole-image pass), stage 2 (the tiles; a cascade's only where stage 1 finds bone, with the tiles run of those
possible), blend, threshold + RLE. Timing: CUDA events around each call on GPU (after a synchronise),
``time.perf_counter`` on CPU. The per-tile latency starts from a float32 tile batch already on the device (the
host-to-device copy is not in it); the whole-image time starts from the PNG on disk (decoding and the upload of the
image are in it). Peak memory: on CPU the process's peak resident set (``VmHWM``); on CUDA
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` and, beside it, the device's used memory
(``torch.cuda.mem_get_info``, which also sees what TensorRT and AOTInductor allocate outside torch's allocator),
sampled every 2 ms (:mod:`evaluator.memory_peak`). Agreement (max |logit diff| on the tiles, mask Dice of the
image) is against the eager fp32 process's outputs.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from evaluator.agreement import mask_dice
from evaluator.backends import BACKENDS
from evaluator.build_engine import EngineRequest, build_engine
from evaluator.config import EvalConfig
from evaluator.engines import efficiency_batches, load_engine
from evaluator.manifest import StaleEngineError
from evaluator.report import save_figure
from handseg.data.image_io import write_png
from handseg.format.markdown import markdown_table
from handseg.format.rle import rle_decode
from handseg.model.checkpoint import LoadedCheckpoint
from handseg.phantom import render_hand
from handseg.runtime.errors import HandSegError

CPU_MEMORY_METHOD = "peak resident set (VmHWM) of the process that loads the engine and runs it, no model code"
CUDA_MEMORY_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats; device MiB: the GPU's used "
                      "memory (mem_get_info, all allocations incl. TensorRT/AOTInductor), sampled every 2 ms")
TIMING_NOTE = ("tile latency from a float32 tile batch already on the device (host-to-device copy excluded); "
               "whole image from the PNG on disk (decode and upload included)")


@dataclass
class Measurement:
    """One engine at one tile batch, as ``efficiency.json`` stores it. Times in milliseconds, memory in MiB."""

    engine: str
    batch: int
    tile_ms_p50: float  # per tile: call latency / batch (a cascade: its stage 2)
    tile_ms_p90: float
    tile_ms_p99: float
    batch_ms_p50: float
    tiles_per_s: float
    stage1_call_ms: float | None  # a cascade's stage 1 on one whole image
    image_ms: float  # whole image: decode, preprocessing, both stages, blending, thresholds and RLE
    images_per_s: float
    peak_mem_mib: float
    peak_mem_increase_mib: float
    decode_ms: float  # the phases of the whole image (PhaseTimer; they add up to about image_ms)
    preprocess_ms: float
    stage1_ms: float
    stage2_ms: float
    blend_ms: float
    threshold_rle_ms: float
    engine_ms: float  # stage1_ms + stage2_ms
    postprocess_ms: float  # blend_ms + threshold_rle_ms: everything after the model
    model_share: float  # engine_ms / the sum of the phases
    tiles_run: float  # per image: the tiles a cascade's stage 2 ran on, of tiles_possible
    tiles_possible: float
    tile_selection: bool
    torch_threads: int
    model_code_loaded: bool
    max_abs_diff_logits: float
    mask_dice_min: float
    mask_dice_mean: float
    device_mem_peak_mib: float | None = None  # CUDA: the device's used memory (see the module docstring)
    device_mem_increase_mib: float | None = None


def available_engines(cfg: EvalConfig) -> list[str]:
    """Engines to measure: the config's list, else eager (fp32 and autocast) and every compiled backend that
    can run here."""
    if cfg.efficiency.backends:
        return list(cfg.efficiency.backends)
    compiled = [n for n, b in BACKENDS.items() if b.compiled and b.missing(cfg.device) is None]
    return ["eager_fp32", "eager_autocast", *compiled]


def ensure_engine(name: str, cfg: EvalConfig, ckpt: LoadedCheckpoint, batch: int, image: np.ndarray) -> bool:
    """Whether engine ``name`` at ``batch`` can be measured: eager always; a compiled engine that exists and matches
    the checkpoint, or that is missing and compiled now (AOTInductor, where ``efficiency.compile_missing`` allows).
    A missing compiled engine of another backend (e.g. TensorRT, where ``tensorrt_aot.py`` fell back to
    AOTInductor) is skipped with one line when the backends were not listed in the config, and an error when they
    were."""
    if name.startswith("eager"):
        return True
    try:
        load_engine(cfg, ckpt, backend=name, batch=batch)
        return True
    except StaleEngineError as exc:
        if not cfg.efficiency.compile_missing or name != "aot_inductor":
            if cfg.efficiency.backends or "no " not in str(exc):
                raise
            print(f"  {name}: skipped ({exc})", file=sys.stderr)
            return False
    build_engine(cfg, ckpt, image, EngineRequest(backend=name, batch=batch))
    return True


def child_command(cfg_path: str | Path, sets: Sequence[str], ckpt: LoadedCheckpoint, png: Path) -> list[str]:
    """The command of :mod:`evaluator.efficiency_child` on the config ``cfg_path`` with the ``--set`` strings
    ``sets``, the checkpoint chosen here and the image ``png``; :func:`measure_in_child` adds engine and batch."""
    return [sys.executable, "-m", "evaluator.efficiency_child", "--cfg-path", str(cfg_path), "--checkpoint",
            str(ckpt.folder), "--image", str(png), *[arg for s in sets for arg in ("--set", s)]]


def measure_in_child(command: list[str], name: str, batch: int, out: Path) -> dict:
    """Run the child ``command`` (:func:`child_command`) for one engine and batch; its row and outputs are written
    to ``out``."""
    cmd = [*command, "--engine", name, "--batch", str(batch), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HandSegError(f"efficiency of {name} at batch {batch} failed: {tail}")
    return json.loads((out / "row.json").read_text())


def _masks(folder: Path, hw: tuple[int, int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([rle_decode(r, hw) for r in json.loads((folder / "rles.json").read_text())]))


def agreement(folder: Path, ref: Path, hw: tuple[int, int]) -> dict:
    """Max |logit diff| on the tile batch and mask Dice of the image, of the outputs in ``folder`` against ``ref``
    (eager fp32's)."""
    diff = (torch.load(folder / "logits.pt") - torch.load(ref / "logits.pt")).abs().max()
    dice = mask_dice(_masks(folder, hw).bool(), _masks(ref, hw).bool())
    return {"max_abs_diff_logits": float(diff), "mask_dice_min": float(dice.min()),
            "mask_dice_mean": float(dice.mean())}


def run_efficiency(cfg: EvalConfig, ckpt: LoadedCheckpoint, cfg_path: str | Path, sets: Sequence[str] = (),
                   progress: bool = True) -> dict:
    """Measure every available engine at each tile batch of :func:`evaluator.engines.efficiency_batches`, one
    process each; returns the JSON-ready result."""
    size = cfg.efficiency.image_size
    image, _ = render_hand(0, size, "R")
    batches = efficiency_batches(cfg)
    names = available_engines(cfg)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        png = write_png(Path(tmp) / "hand.png", image)  # the whole-image time includes decoding a real file
        command = child_command(cfg_path, sets, ckpt, png)
        for batch in batches:
            names_here = [n for n in names if ensure_engine(n, cfg, ckpt, batch, image)]
            ref = Path(tmp) / f"eager_fp32_b{batch}"
            order = ["eager_fp32"] + [n for n in names_here if n != "eager_fp32"]  # the reference first
            for name in order:
                row = measure_in_child(command, name, batch, Path(tmp) / f"{name}_b{batch}")
                row.update(agreement(Path(tmp) / f"{name}_b{batch}", ref, (size, size)))
                if name not in names_here:
                    continue
                if progress:
                    print(f"  {row['engine']:<22} batch {batch}: {row['image_ms']:9.1f} ms/image, "
                          f"tiles {row['tiles_run']:.0f}/{row['tiles_possible']:.0f}, "
                          f"model {100 * row['model_share']:4.1f}%, {row['peak_mem_mib']:8.1f} MiB")
                rows.append(row)
    return {
        "device": cfg.device,
        "device_name": torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else cpu_name(),
        "torch_threads": rows[0]["torch_threads"] if rows else torch.get_num_threads(),
        "checkpoint": str(ckpt.folder),
        "input": ckpt.spec.to_dict(),
        "image_size": size,
        "warmup": cfg.efficiency.warmup,
        "iters": cfg.efficiency.iters,
        "image_iters": cfg.efficiency.image_iters,
        "memory_method": CUDA_MEMORY_METHOD if cfg.device.startswith("cuda") else CPU_MEMORY_METHOD,
        "timing": TIMING_NOTE,
        "results": rows,
        "compiled_gain": compiled_gain(rows),
    }


def compiled_gain(rows: list[dict]) -> list[dict]:
    """Per compiled engine and batch: its per-tile gain over eager fp32 (tile p50 ratio) and its whole-image gain
    (image ms ratio), and how much of the first reaches the second (``reaches``: image gain / tile gain)."""
    eager = {r["batch"]: r for r in rows if r["engine"] == "eager_fp32"}
    out = []
    for r in rows:
        ref = eager.get(r["batch"])
        if ref is None or r["engine"].startswith("eager"):
            continue
        tile, whole = ref["tile_ms_p50"] / r["tile_ms_p50"], ref["image_ms"] / r["image_ms"]
        out.append({"engine": r["engine"], "batch": r["batch"], "tile_gain": tile, "image_gain": whole,
                    "reaches": whole / tile})
    return out


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
    ("engine", "engine", "{}"), ("batch", "batch", "{}"), ("tiles_run", "tiles run", "{:.0f}"),
    ("tiles_possible", "of", "{:.0f}"), ("decode_ms", "decode ms", "{:.1f}"),
    ("preprocess_ms", "preprocess ms", "{:.1f}"), ("stage1_ms", "stage 1 ms", "{:.1f}"),
    ("stage2_ms", "stage 2 ms", "{:.1f}"), ("blend_ms", "blend ms", "{:.1f}"),
    ("threshold_rle_ms", "threshold + RLE ms", "{:.1f}"), ("postprocess_ms", "after the model ms", "{:.1f}"),
    ("model_share", "model share", "{:.0%}"),
]
GAIN_COLUMNS = [
    ("engine", "engine", "{}"), ("batch", "batch", "{}"), ("tile_gain", "per-tile gain", "{:.2f}x"),
    ("image_gain", "whole-image gain", "{:.2f}x"), ("reaches", "image / tile gain", "{:.0%}"),
]


def _markdown(rows: list[dict], columns: list[tuple[str, str, str]]) -> list[str]:
    """The lines of a markdown table of ``rows``, one column per (key, title, format)."""
    cells = [[fmt.format(row[key]) for key, _title, fmt in columns] for row in rows]
    return markdown_table([title for _key, title, _fmt in columns], cells).splitlines()


def format_table(result: dict) -> str:
    """Markdown: the engines table (on CUDA with the device's used memory too), where one whole image's time goes
    (phase by phase, with the tiles a cascade's stage 2 ran on), and how much of each compiled engine's per-tile
    gain over eager reaches the whole image."""
    rows = result["results"]
    columns = COLUMNS
    if any(r.get("device_mem_peak_mib") is not None for r in rows):
        columns = [*COLUMNS[:8], ("device_mem_peak_mib", "device MiB", "{:.0f}"), *COLUMNS[8:]]
    note = (
        f"\n{result['image_size']}x{result['image_size']} image on {result['device']} ({result['device_name']}), "
        f"{result['torch_threads']} threads, one process per row; whole-image time: decoding the PNG, "
        f"preprocessing, both stages, blending, thresholds and RLE; timing: {result.get('timing', 'not recorded')}; "
        f"memory: {result['memory_method']}.\n"
    )
    phases = ["", "Where one whole image's time goes (mean per image):", ""] + _markdown(rows, PHASE_COLUMNS)
    gains = result.get("compiled_gain") or []
    if gains:
        phases += ["", "Compiled engine against eager fp32:", ""] + _markdown(gains, GAIN_COLUMNS)
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
