"""The scale gap, measured: a checkpoint's validation Dice at full resolution when it is fed its input at other
scales than it was trained at (the whole image resized to several sides, native-resolution tiles of several
sizes).

A model trained on whole images at 384 px sees a bone about 5x smaller than a 2048 px native tile shows it; the
sweep says how much Dice that costs, which is what a two-stage recipe has to bridge. Every row goes through the
one scoring path (:func:`handseg.inference.scoring.score_images`) with the eager model.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

from handseg.format.markdown import markdown_table
from handseg.inference.engine import eager_engine
from handseg.inference.scoring import score_images
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.checkpoint import LoadedCheckpoint
from handseg.model.io import InputSpec
from handseg.model.presets import size_divisor

SMALL_CLASSES = ("finger-16", "Trapezoid", "Pisiform")


def sweep_specs(ckpt: LoadedCheckpoint, sides: Sequence[int], tiles: Sequence[int], overlap: float = 0.25) -> list:
    """Input specs to try: the whole image resized to each of ``sides``, native tiles of each of ``tiles`` (sizes
    the model's stride does not divide are rounded down to a multiple of it). A cascade's stage 2 runs on tiles
    only (its prior keeps its own scale)."""
    divisor = size_divisor(ckpt.model_cfg)
    base = ckpt.spec
    specs = [] if base.prior is not None else [
        replace(base, mode="resize", image_size=s // divisor * divisor, tile_size=s // divisor * divisor)
        for s in sides]
    specs += [replace(base, mode="tile", image_size=t // divisor * divisor, tile_size=t // divisor * divisor,
                      overlap=overlap) for t in tiles]
    return specs


def describe(spec: InputSpec) -> str:
    return f"whole image at {spec.image_size} px" if spec.mode == "resize" else f"native {spec.tile_size} px tiles"


def run_scale_sweep(ckpt: LoadedCheckpoint, samples: list, specs: Sequence[InputSpec], device: str = "cpu",
                    batch_size: int = 4, progress: bool = True) -> list[dict]:
    """One row per input spec: mean Dice at full resolution over ``samples``, the three smallest classes, seconds
    per image, and whether it is the scale the checkpoint was trained at."""
    engine = eager_engine(ckpt.model, "fp32", device, prior=ckpt.prior.model if ckpt.prior else None)
    rows = []
    for spec in specs:
        settings = InferenceSettings(input=spec, batch_size=batch_size)
        t0 = time.perf_counter()
        summary = score_images(InferenceCall(engine, settings, device), samples, progress=progress).summary()
        rows.append({"input": describe(spec), "mode": spec.mode, "side": spec.model_size,
                     "trained": (spec.mode, spec.model_size) == (ckpt.spec.mode, ckpt.spec.model_size),
                     "mean_dice": summary.mean, **{c: summary.per_class[c] for c in SMALL_CLASSES},
                     "seconds_per_image": (time.perf_counter() - t0) / max(len(samples), 1)})
    return rows


def format_sweep_table(rows: list[dict], n_images: int) -> str:
    """Markdown table of the sweep (the trained scale marked)."""
    cells = [[f"**{r['input']}** (trained)" if r["trained"] else r["input"], f"{r['mean_dice']:.4f}",
              f"{r['finger-16']:.3f}", f"{r['Trapezoid']:.3f}", f"{r['Pisiform']:.3f}", f"{r['seconds_per_image']:.2f}"]
             for r in rows]
    table = markdown_table(["input", "mean Dice", "finger-16", "Trapezoid", "Pisiform", "s / image"], cells, "lrrrrr")
    return table + f"\n\n{n_images} validation image(s); Dice at the original resolution, threshold 0.5."
