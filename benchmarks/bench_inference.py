"""Time the project's result path against the full-map path it replaced, on the same engine outputs, in one run.

    python benchmarks/bench_inference.py [--stage1 runs/demo_stage1/best] [--stage2 runs/demo_stage2/best]
                                         [--size 2048] [--images 3] [--tile 1024] [--threads 2] [--no-aot]
                                         [--deploy-batches 1 4] [--cascade-only] [--cascade-batch 1]
                                         [--thresholds outputs/demo/eval/thresholds.yaml] [--baseline-rev REV]

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

Last (alone with ``--cascade-only``), the deployed cascade on whole images (:mod:`cascade_deployed`): every tile
against the tile selection (the margin tuned in ``--thresholds``), eager against the AOTInductor pair (stage 2 at
``--cascade-batch``, above 1 with its batch-1 tail and also padded as before; stage 1 at batch 1), one process per
engine: tiles run, stage-1, stage-2 and
post-processing time, the model's share, whole-image time, peak RSS, and the compiled engine's per-tile and
whole-image gains; with ``--baseline-rev``, the path before the selection (that revision) on the same engines.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_models import compile_mode, deployed_engine, mode_engine, stage1_model
from bench_rle import baseline_rle_encode, best_time
from cascade_deployed import baseline_paths, measure_paths, report
from rss import peak_rss_mib, reset_peak_rss, status_mib

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize
from handseg.inference.engine import Engine, eager_engine
from handseg.inference.pipeline import dense_probs, masks_from_outputs, run_model, threshold_probs
from handseg.inference.settings import inference_settings
from handseg.model.presets import size_divisor
from handseg.phantom import render_hand
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main

MODES = ("resize", "tile", "cascade")
REPO = Path(__file__).resolve().parents[1]
MODEL_CODE = "transformers.models.segformer.modeling_segformer"  # imported once a SegFormer model is built
THRESHOLD = 0.5


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
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
    p.add_argument("--thresholds", default="outputs/demo/eval/thresholds.yaml",
                   help="thresholds file (tuned thresholds, post-processing, tile selection) of the cascade section")
    p.add_argument("--cascade-only", action="store_true", help="only the deployed cascade: every tile vs selection")
    p.add_argument("--baseline-rev", default=None,
                   help="git revision of the path before the tile selection (e.g. a73e06e): its every-tile time on "
                        "the same engine files, from a worktree")
    p.add_argument("--cascade-batch", type=int, default=1,
                   help="stage-2 tile batch of the deployed cascade (above 1: with its batch-1 tail, and padded)")
    p.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--child-cascade", metavar="KIND", help=argparse.SUPPRESS)
    p.add_argument("--child-engines", nargs=2, metavar=("DIR", "BATCH"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


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
    before = status_mib("VmRSS") or peak_rss_mib()
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


def child_json(argv: list[str], extra: list[str]) -> dict:
    """Run this script as a child with ``extra`` arguments; the JSON it prints last."""
    proc = subprocess.run([sys.executable, __file__, *argv, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_rss(mode: str, path: str, argv: list[str], engines: tuple[Path, int] | None = None) -> dict:
    extra = [] if engines is None else ["--child-engines", str(engines[0]), str(engines[1])]
    return child_json(argv, ["--child", mode, path, *extra])


def deployed_rss(mode: str, args, argv: list[str], folder: Path) -> dict[int, dict]:
    """Peak RSS of a process that runs the mode's compiled engines (one per tile batch; resize mode: batch 1)."""
    batches = [1] if mode == "resize" else args.deploy_batches
    compile_mode(mode, batches, args, folder)
    return {batch: peak_rss(mode, "deployed", argv, (folder, batch)) for batch in batches}


def cascade_child(kind: str, args) -> None:
    """One engine kind (``eager``: the models; ``aot``: the compiled pair of ``--child-engines``, no model) on every
    hand through each path of :mod:`cascade_deployed`; prints the figures and the process's peak RSS."""
    if kind == "aot":
        folder, batch = args.child_engines
        engine, spec = deployed_engine("cascade", int(batch), Path(folder))
    else:
        engine, spec, _ = mode_engine("cascade", args)
    result = measure_paths(engine, spec, [image for image, _ in hands(args.images, args.size)], args.thresholds,
                           args.repeats, args.cascade_batch)
    print(json.dumps({**result, "peak_mib": peak_rss_mib()}))


def cascade_section(args, argv: list[str], folder: Path) -> list[str]:
    """The deployed cascade: every tile vs the selection, eager vs AOTInductor (at ``--cascade-batch``, above 1
    with its batch-1 tail)."""
    kinds = ["eager"] if args.no_aot else ["eager", "aot"]
    batch = args.cascade_batch
    if not args.no_aot and not all((folder / f"cascade_{n}.pt2").is_file() for n in ("b1", f"b{batch}", "prior")):
        compile_mode("cascade", sorted({1, batch}), args, folder)
    results = {kind: child_json(argv, ["--child-cascade", kind, "--child-engines", str(folder), str(batch)])
               for kind in kinds}
    if args.baseline_rev and not args.no_aot:
        results["before"] = {**baseline_paths(args.baseline_rev, folder, args, REPO), "rev": args.baseline_rev}
    return report(results, args.images, args.size, args.threads)


def aot_vs_eager(args, images) -> tuple[float, float]:
    """Whole-image ms (engine + streamed path, best of repeats, mean over images) of resize mode: eager, AOT."""
    from evaluator.compile_aoti import compile_aoti, load_aoti
    from evaluator.export import export_logits

    model, cfg, spec, _ = stage1_model(args.stage1)
    side = spec.model_size
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_aoti(export_logits(model, (1, 3, side, side), size_divisor(cfg)), None, Path(tmp) / "stage1.pt2")
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
    if args.child_cascade:
        cascade_child(args.child_cascade, args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if not args.cascade_only:
            compare_paths(args, argv, Path(tmp))
        print("\n".join(cascade_section(args, argv, Path(tmp))))
    return 0


def compare_paths(args, argv: list[str], folder: Path) -> None:
    """The full-map path against the streamed one per mode, their RSS, the deployed RSS, AOT vs eager (resize)."""
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
            for batch, r in deployed_rss(mode, args, argv, folder).items():
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


if __name__ == "__main__":
    sys.exit(main())
