"""The measured parts of ``scripts/gpu_smoke.py``, each run in a process of its own (``--part NAME --json FILE``).

``steps``: training steps at the shipped configs' sizes through the training loop itself
(:func:`trainer.loop.train_batches`) on synthetic batches already on the device: images/s with the loss and stop
flags checked after every optimiser step and every ``FLAG_CHECK_EVERY`` (the host sync of the issue's finding 8),
and peak memory (torch's allocator, and the device's used memory). ``costs``: the other per-step costs of
finding 8: the stage-1 prior resampled per window or batched (with a check that both agree to the bit), one
validation image in float32 or the run's bf16, and the tile padding of the evaluation batch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from gpu_chain import CPU_TINY, GPU_SMOKE, REPO

from evaluator.agreement import mask_dice
from evaluator.memory_peak import PeakRSS, PeakSampler, device_used
from handseg.inference.engine import eager_engine
from handseg.inference.pipeline import predict_masks
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.inference.tiling import tile_windows
from handseg.model.factory import build_model, cascade_refiner
from handseg.model.io import InputSpec, logits_over_windows
from handseg.phantom import render_hand
from trainer.config import TrainConfig, load_train_config
from trainer.ema import EMA
from trainer.loop import TrainModule, train_batches
from trainer.losses import SegLoss
from trainer.optim import LRSchedule, build_optimizer
from trainer.state import EpochPlan, EpochRun, TrainProgress, TrainState
from trainer.stop_flag import StopFlag
from trainer.train import FLAG_CHECK_EVERY


def configs(cpu: bool) -> tuple[TrainConfig, TrainConfig]:
    """The shipped stage-1 and stage-2 configs, with the profile's size overrides (tiny on the CPU)."""
    profile = CPU_TINY if cpu else GPU_SMOKE
    return (load_train_config(REPO / "config/train_stage1.yaml", sets=profile["stage1"]),
            load_train_config(REPO / "config/train_stage2.yaml", sets=profile["stage2"]))


def native_side(cpu: bool) -> int:
    return 256 if cpu else 2048


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def networks(stage: int, s1: TrainConfig, s2: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """Stage 1 (random init), or a cascade's stage 2 with its stage 1 as the prior."""
    torch.manual_seed(0)
    stage1 = build_model(replace(s1.model, pretrained=None))
    if stage == 1:
        return stage1, None
    return cascade_refiner(stage1, s1.model)[0], stage1.eval()


def synthetic_batch(stage: int, s1: TrainConfig, s2: TrainConfig, native: int, device) -> dict:
    """A batch as the loader gives it (on the device): images, packed labels, and for stage 2 the prior's input and
    each crop's window in a ``native``-pixel image."""
    gen = torch.Generator().manual_seed(0)
    cfg, side = (s1, s1.data.image_size) if stage == 1 else (s2, s2.data.crop_size)
    b = cfg.data.batch_size
    batch = {"pixel_values": torch.randn(b, 3, side, side, generator=gen),
             "labels": torch.randint(0, 2**29, (b, side, side), generator=gen, dtype=torch.int32)}
    if stage == 2:
        prior = s1.data.image_size
        starts = torch.randint(0, native - side + 1, (b, 2), generator=gen).float()
        batch["prior_pixel_values"] = torch.randn(b, 3, prior, prior, generator=gen)
        batch["window"] = torch.cat([starts, torch.full((b, 2), float(native))], dim=1)
    return {k: v.to(device) for k, v in batch.items()}


def peak_memory(device: torch.device):
    """A sampler of the device's used memory (CUDA) or the process's RSS (CPU)."""
    return PeakSampler(lambda: device_used(str(device))) if device.type == "cuda" else PeakRSS()


def part_steps(stage: int, precision: str, cpu: bool) -> dict:
    """Images/s and peak memory of training steps (see the module docstring)."""
    s1, s2 = configs(cpu)
    cfg = s1 if stage == 1 else s2
    accelerator = Accelerator(cpu=cpu, mixed_precision="no" if precision == "fp32" else precision,
                              gradient_accumulation_steps=cfg.grad_accum_steps)
    device = accelerator.device
    net, prior = networks(stage, s1, s2)
    model = TrainModule(net, prior, aux=cfg.model.aux_loss_weight > 0)
    optimizer = build_optimizer(model, cfg.optim)
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainState(model, optimizer, LRSchedule(optimizer, cfg.schedule, total_steps=1000),
                       EMA(accelerator.unwrap_model(model).model, cfg.ema.decay) if cfg.ema.enabled else None,
                       TrainProgress())
    batch = synthetic_batch(stage, s1, s2, native_side(cpu), device)
    loss_fn = SegLoss(cfg.loss, aux_weight=cfg.model.aux_loss_weight)
    steps = 2 if cpu else FLAG_CHECK_EVERY

    def run(optimiser_steps: int, check_every: int) -> float:
        micro = optimiser_steps * cfg.grad_accum_steps
        plan = EpochPlan(micro, 1, cfg.grad_accum_steps, check_every=check_every)
        state.progress = TrainProgress()
        sync(device)
        t0 = time.perf_counter()
        train_batches(accelerator, state, [batch] * micro, epoch=0, stop=StopFlag(),
                      run=EpochRun(plan, loss_fn, cfg.clip_grad_norm, log_every=10**9))
        sync(device)
        return micro * cfg.data.batch_size / (time.perf_counter() - t0)

    run(2, 1)  # warm-up (cudnn autotuning, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with peak_memory(device) as used:
        every_step = run(steps, 1)
    deferred = run(steps, FLAG_CHECK_EVERY)
    allocated = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"stage": stage, "precision": precision, "batch": cfg.data.batch_size,
            "grad_accum_steps": cfg.grad_accum_steps, "side": batch["pixel_values"].shape[-1],
            "preset": cfg.model.preset, "optimiser_steps": steps, "images_per_s_check_every_step": every_step,
            f"images_per_s_check_every_{FLAG_CHECK_EVERY}": deferred,
            "peak_allocated_mib": allocated / 2**20 if allocated is not None else None,
            "peak_used_mib": used.peak / 2**20, "used_memory": "device" if device.type == "cuda" else "process RSS"}


def timed_ms(fn, device, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return 1000.0 * (time.perf_counter() - t0) / repeats


def resampling_cost(s1: TrainConfig, s2: TrainConfig, native: int, device) -> dict:
    """The stage-1 prior over each crop, per window (a host sync each) and batched: ms per call, and equality."""
    batch = synthetic_batch(2, s1, s2, native, device)
    grid = s1.data.image_size // 4  # SegFormer's logits of the prior's input
    logits = torch.randn(len(batch["window"]), 29, grid, grid, device=device)
    crop = s2.data.crop_size
    loop = logits_over_windows(logits, batch["window"], crop, crop, batched=False)
    batched = logits_over_windows(logits, batch["window"], crop, crop, batched=True)
    return {"windows": len(batch["window"]), "crop": crop, "logits_side": grid,
            "per_window_ms": timed_ms(lambda: logits_over_windows(logits, batch["window"], crop, crop, batched=False),
                                      device, 5),
            "batched_ms": timed_ms(lambda: logits_over_windows(logits, batch["window"], crop, crop, batched=True),
                                   device, 5),
            "identical": bool(torch.equal(loop, batched))}


def validation_cost(s1: TrainConfig, s2: TrainConfig, native: int, device) -> dict:
    """One validation image (stage 2's tiles, its stage 1 first) in float32 and in the run's bf16: ms, mask Dice."""
    net, prior = networks(2, s1, s2)
    prior_spec = InputSpec(mode="resize", image_size=s1.data.image_size, tile_size=s1.data.image_size)
    spec = InputSpec(mode="tile", image_size=s2.data.crop_size, tile_size=s2.data.crop_size,
                     overlap=s2.val.overlap, prior=prior_spec)
    settings = InferenceSettings(input=spec, batch_size=s2.val.batch_size, blend=s2.val.blend)
    image, _ = render_hand(0, native, "R")
    out, masks = {}, {}
    for precision in ("fp32", "bf16"):
        engine = eager_engine(net, precision, device, prior=prior)
        call = InferenceCall(engine, settings, device, 0.5)
        out[f"{precision}_ms"] = timed_ms(lambda c=call: predict_masks(c, image), device, 1)
        masks[precision] = predict_masks(call, image).to_dense().cpu()
    out["mask_dice_min_bf16_vs_fp32"] = float(mask_dice(masks["bf16"], masks["fp32"]).min())
    out["image_side"] = native
    return out


def padding(native: int, tile: int, overlap: float, batches: list[int]) -> list[dict]:
    """Tiles per image and the padded slots of each tile batch (a static engine batch pads the last call)."""
    n = len(tile_windows(native, native, tile, overlap))
    rows = []
    for b in sorted(set(batches)):
        padded = math.ceil(n / b) * b - n
        rows.append({"tiles_per_image": n, "batch": b, "padded_slots": padded, "padded_share": padded / (n + padded)})
    return rows


def part_costs(cpu: bool) -> dict:
    s1, s2 = configs(cpu)
    device = torch.device("cpu" if cpu else "cuda")
    native = native_side(cpu)
    eval_batch = int(yaml.safe_load((REPO / "config/eval.yaml").read_text())["batch_size_eval"])
    return {"resampling": resampling_cost(s1, s2, native, device),
            "validation": validation_cost(s1, s2, native, device),
            "padding": padding(native, s2.data.crop_size, s2.val.overlap, [eval_batch, s2.val.batch_size, 4])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["steps", "costs"], required=True)
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    np.random.seed(0)
    result = part_steps(args.stage, args.precision, args.cpu) if args.part == "steps" else part_costs(args.cpu)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
