"""Time the project's result path against the full-map path it replaced, on the same engine outputs, in one run.

    python benchmarks/bench_inference.py [--stage1 runs/demo_stage1/best] [--stage2 runs/demo_stage2/best]
                                         [--size 2048] [--images 3] [--tile 1024] [--threads 2] [--no-aot]
                                         [--deploy-batches 1 4]

Modes: ``resize`` (stage 1 as trained: the whole image at its input size), ``tile`` (stage 1's network on native
``--tile`` px tiles, overlap 0.25, Gaussian blending: the form of a plain stage-2 checkpoint) and ``cascade``
(stage 2 when it is a cascade). Checkpoints that are not there (before ``make demo``) are replaced by
randomly initialised ``demo`` models, which is said in the output. For every mode and phantom hand the engine
runs once, then both paths turn its outputs into masks, RLE strings and Dice counts against the labels:

- full map (before): the 29 probability maps at full size (upsampled, blended, sigmoid), thresholds, the usual
  per-mask numpy RLE encoder, counts on full-size masks;
- streamed (now, :func:`handseg.inference.pipeline.masks_from_outputs`): each class only inside its candidate box,
  thresholds in logit space, :meth:`ClassMasks.rle` and :meth:`ClassMasks.counts`.

Printed: pixels, RLE strings and counts that differ; engine ms and ms after the engine per image for both paths
(best of ``--repeats``); peak RSS of one process per (mode, path) predicting every image with the eager model
(each in a fresh process, ``--child``); in resize mode, the whole-image time of an AOTInductor engine against
eager's. Unless ``--no-aot``: the peak RSS of the deployed form, a process that loads AOTInductor engines (at each
of ``--deploy-batches``) as the evaluator does, without building the model or importing its code.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import resource
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_rle import baseline_rle_encode, best_time
from torch import nn

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize
from handseg.inference.engine import Engine, eager_engine
from handseg.inference.pipeline import dense_probs, inference_settings, masks_from_outputs, run_model, threshold_probs
from handseg.model.checkpoint import load_checkpoint
from handseg.model.factory import build_model, cascade_refiner
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig, size_divisor
from handseg.phantom import render_hand
from handseg.runtime.errors import cli_main

MODES = ("resize", "tile", "cascade")
MODEL_CODE = "transformers.models.segformer.modeling_segformer"  # imported once a SegFormer model is built
THRESHOLD = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage1", default="runs/demo_stage1/best")
    p.add_argument("--stage2", default="runs/demo_stage2/best")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--tile", type=int, default=1024, help="tile side of the tile mode")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-aot", action="store_true", help="skip the AOTInductor compile (about a minute on CPU)")
    p.add_argument("--deploy-batches", type=int, nargs="+", default=[1, 4],
                   help="tile batches of the compiled engines whose deployed peak RSS is measured")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--child-engines", nargs=2, metavar=("DIR", "BATCH"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


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
        compile_aoti(export_logits(prior, 1, spec.prior.model_size, size_divisor(cfg)), None,
                     folder / f"{mode}_prior.pt2")
    for batch in batches:
        compile_aoti(export_logits(net, batch, spec.model_size, size_divisor(cfg), channels=spec.channels), None,
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
    return engine, spec


def hands(n: int, size: int) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """``n`` phantom hands: (image (size, size) uint8, 29 polygons in CLASSES order)."""
    out = []
    for seed in range(n):
        image, polygons = render_hand(seed, size, "R" if seed % 2 == 0 else "L")
        out.append((image, [polygons[c] for c in CLASSES]))
    return out


def full_map_path(outputs, truth_dense: np.ndarray) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The path before: full-size probabilities, thresholds, per-mask RLE, counts on full masks."""
    masks = threshold_probs(dense_probs(outputs), THRESHOLD).numpy()
    rles = [baseline_rle_encode(m.astype(np.uint8)) for m in masks]
    flat_p, flat_g = masks.reshape(len(CLASSES), -1), truth_dense.reshape(len(CLASSES), -1)
    counts = np.stack([(flat_p & flat_g).sum(1), flat_p.sum(1), flat_g.sum(1)], axis=1)
    return masks, rles, counts


def streamed_path(outputs, truth: ClassMasks) -> tuple[ClassMasks, list[str], np.ndarray]:
    """The project's path: per-class boxes, thresholds in logit space, box-wise RLE and counts."""
    masks = masks_from_outputs(outputs, THRESHOLD)
    return masks, masks.rle(), masks.counts(truth)


def best_ms(fn, repeats: int) -> tuple[float, object]:
    """``bench_rle.best_time`` in milliseconds: (best of ``repeats`` runs, the last result)."""
    seconds, result = best_time(fn, repeats)
    return 1000 * seconds, result


def compare_mode(mode: str, args, images) -> dict:
    engine, spec, source = mode_engine(mode, args)
    settings = inference_settings(spec, engine, batch_size=4)
    row = {"mode": mode, "weights": source, "engine_ms": [], "full_ms": [], "streamed_ms": [],
           "pixels_differ": 0, "rle_differ": 0, "counts_differ": 0}
    for image, polys in images:
        engine_ms, outputs = best_ms(lambda: run_model(engine, image, settings), args.repeats)
        truth_dense = rasterize(polys, image.shape).astype(bool)
        truth = ClassMasks.from_polygons(polys, image.shape)
        full_ms, (fm, frle, fcounts) = best_ms(lambda: full_map_path(outputs, truth_dense), args.repeats)
        new_ms, (sm, srle, scounts) = best_ms(lambda: streamed_path(outputs, truth), args.repeats)
        row["engine_ms"].append(engine_ms)
        row["full_ms"].append(full_ms)
        row["streamed_ms"].append(new_ms)
        row["pixels_differ"] += int(np.count_nonzero(sm.to_dense().numpy() != fm))
        row["rle_differ"] += sum(a != b for a, b in zip(srle, frle))
        row["counts_differ"] += int(np.count_nonzero(scounts != fcounts))
    return row


def _status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``) in MiB; None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB. ``VmHWM`` belongs to the process's own address space; ru_maxrss
    (the fallback) also counts the parent's peak on Linux, since it survives ``exec``."""
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset the peak to the current resident set (Linux: ``5`` into ``/proc/self/clear_refs``), so that what
    follows is measured on its own; a no-op where that is not possible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap (the phantoms' rendering) back first
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def child(mode: str, path: str, args) -> None:
    """One process, one (mode, path): every image through the engine and the path; prints the resident set in MiB
    once torch, the engine and the images are loaded (``before``; the peak is reset there, so rendering the
    phantoms does not count), the peak after the first image and after all of them, and whether the transformers
    modelling code was imported. ``deployed``: the streamed path on the compiled engines of ``--child-engines``,
    loaded as the evaluator loads them (no model built); otherwise the eager model."""
    if path == "deployed":
        folder, batch = args.child_engines
        engine, spec = deployed_engine(mode, int(batch), Path(folder))
    else:
        engine, spec, _ = mode_engine(mode, args)
    settings = inference_settings(spec, engine, batch_size=engine.batch_size or 4)
    images = hands(args.images, args.size)
    gc.collect()
    reset_peak_rss()
    before = _status_mib("VmRSS") or peak_rss_mib()
    peaks = []
    for image, polys in images:
        outputs = run_model(engine, image, settings)
        if path == "full":
            full_map_path(outputs, rasterize(polys, image.shape).astype(bool))
        else:
            streamed_path(outputs, ClassMasks.from_polygons(polys, image.shape))
        del outputs
        peaks.append(peak_rss_mib())
    print(json.dumps({"before": before, "first": peaks[0], "all": peaks[-1],
                      "model_code": MODEL_CODE in sys.modules}))


def peak_rss(mode: str, path: str, argv: list[str], engines: tuple[Path, int] | None = None) -> dict:
    extra = [] if engines is None else ["--child-engines", str(engines[0]), str(engines[1])]
    proc = subprocess.run([sys.executable, __file__, *argv, "--child", mode, path, *extra], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def deployed_rss(mode: str, args, argv: list[str]) -> dict[int, dict]:
    """Peak RSS of a process that runs the mode's compiled engines (one per tile batch; resize mode: batch 1)."""
    batches = [1] if mode == "resize" else args.deploy_batches
    with tempfile.TemporaryDirectory() as tmp:
        compile_mode(mode, batches, args, Path(tmp))
        return {batch: peak_rss(mode, "deployed", argv, (Path(tmp), batch)) for batch in batches}


def aot_vs_eager(args, images) -> tuple[float, float]:
    """Whole-image ms (engine + streamed path, best of repeats, mean over images) of resize mode: eager, AOT."""
    from evaluator.compile_aoti import compile_aoti, load_aoti
    from evaluator.export import export_logits

    model, cfg, spec, _ = stage1_model(args.stage1)
    side = spec.model_size
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_aoti(export_logits(model, 1, side, size_divisor(cfg)), None, Path(tmp) / "stage1.pt2")
        model.float()
        aot = Engine(fn=load_aoti(path), backend="aot_inductor", batch_size=1, side=side, path=path)
        times = {}
        for name, engine in (("eager", eager_engine(model)), ("aot", aot)):
            settings = inference_settings(spec, engine, batch_size=1)
            per_image = [best_ms(lambda: masks_from_outputs(run_model(engine, image, settings), THRESHOLD).rle(),
                                 args.repeats)[0] for image, _ in images]
            times[name] = float(np.mean(per_image))
    return times["eager"], times["aot"]


@cli_main
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        child(*args.child, args)
        return 0
    images = hands(args.images, args.size)
    print(f"{args.images} phantom hands at {args.size}x{args.size}, {args.threads} threads, threshold {THRESHOLD}, "
          f"best of {args.repeats}")
    print(f"{'mode':<8} {'engine ms':>10} {'full map ms':>12} {'streamed ms':>12} {'speed-up':>9} "
          f"{'outside/engine':>15} {'px differ':>10} {'RLE differ':>11} {'counts differ':>14} "
          f"{'RSS full MiB':>13} {'RSS streamed MiB':>17}")
    notes, deployed = [], []
    for mode in MODES:
        row = compare_mode(mode, args, images)
        rss = {path: peak_rss(mode, path, argv) for path in ("full", "streamed")}
        eng, full, new = (float(np.mean(row[k])) for k in ("engine_ms", "full_ms", "streamed_ms"))
        print(f"{mode:<8} {eng:>10.1f} {full:>12.1f} {new:>12.1f} {full / new:>8.1f}x {new / eng:>14.0%} "
              f"{row['pixels_differ']:>10} {row['rle_differ']:>11} {row['counts_differ']:>14} "
              f"{rss['full']['all']:>13.0f} {rss['streamed']['all']:>17.0f}")
        notes.append(f"{mode}: weights from {row['weights']}; RSS with the model and images loaded / peak after 1 "
                     f"/ after {args.images}: full {rss['full']['before']:.0f} / {rss['full']['first']:.0f} / "
                     f"{rss['full']['all']:.0f} MiB, streamed {rss['streamed']['before']:.0f} / "
                     f"{rss['streamed']['first']:.0f} / {rss['streamed']['all']:.0f} MiB")
        if not args.no_aot:
            for batch, r in deployed_rss(mode, args, argv).items():
                deployed.append(f"{mode:<8} {batch:>10} {r['before']:>19.0f} {r['first']:>15.0f} {r['all']:>15.0f} "
                                f"{'yes' if r['model_code'] else 'no':>22}")
    print("engine ms: preprocessing and the model; full map / streamed ms: everything after the engine (upsampling, "
          "blending, thresholds, RLE, Dice counts); outside/engine: streamed ms over engine ms; RSS: eager model.")
    print("\n".join(notes))
    if deployed:
        print(f"\nDeployed: the streamed path on AOTInductor engines, loaded as the evaluator loads them (peak RSS, "
              f"MiB, one process per row, {args.images} images)")
        print(f"{'mode':<8} {'tile batch':>10} {'engine + images':>19} {'after 1 image':>15} "
              f"{'after ' + str(args.images):>15} {'transformers models':>22}")
        print("\n".join(deployed))
    if not args.no_aot:
        eager, aot = aot_vs_eager(args, images)
        print(f"resize mode, whole image (engine + streamed path, batch 1): eager {eager:.1f} ms, AOTInductor "
              f"{aot:.1f} ms, {eager / aot:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
