"""The deployed cascade on whole images: every tile against the tile selection, eager against compiled (used by
``bench_inference.py``).

One process per engine kind (the eager models, or the AOTInductor pair loaded without the model) runs each phantom
hand through the deployed path (:func:`handseg.inference.pipeline.predict_masks`, then RLE) once per path and
repeat, the paths interleaved so that a change of the machine's load touches them alike:

- ``every tile, padded``: the path before the selection on a compiled engine, a short last batch padded with zeros;
- ``every tile``: every tile, the remainder of a batch on the engine's batch-1 tail (nothing padded);
- ``selection``: stage 2 only on the tiles near the bones stage 1 finds (the tuned margin, when the thresholds file
  has one).

With ``--baseline-rev``, a process of its own runs the path before the tile selection from that git revision on the
same engine files and hands (every tile, a short batch padded, the image normalised whole, the blend before).

Per path: the tiles run of those possible, preprocessing, stage 1, stage 2, everything after the model (blend,
thresholds, post-processing, RLE), the model's share and the whole image (best of the repeats, mean over the
hands); per process: one stage-2 tile's time on a full batch (the per-tile figure of the compiled gain) and the
peak resident memory (``VmHWM``, the largest path).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from handseg.inference.engine import Engine
from handseg.inference.phase_timer import PhaseTimer
from handseg.inference.pipeline import predict_masks
from handseg.inference.postprocess import PostProcessing
from handseg.inference.settings import InferenceCall, inference_settings
from handseg.inference.tile_selection import TileSelection
from handseg.model.io import InputSpec

PATHS = ("every tile, padded", "every tile", "selection")  # "padded": only on a compiled engine with a batch > 1


def tuned(path: str | Path | None) -> tuple[object, PostProcessing | None, TileSelection, str]:
    """(thresholds, post-processing, tile selection, where they came from) of a thresholds file written by
    ``scripts/tune_thresholds.py``; 0.5, none and the default selection without one."""
    if path is None or not Path(path).is_file():
        return 0.5, None, TileSelection(), "threshold 0.5, default tile selection (no thresholds file)"
    data = yaml.safe_load(Path(path).read_text())
    values = data["thresholds"]
    thresholds = list(values.values()) if isinstance(values, dict) else values
    post = PostProcessing.from_dict(data["postprocess"]) if data.get("postprocess") else None
    entry = data.get("tile_selection")
    selection = TileSelection.from_dict(entry) if entry else TileSelection()
    return thresholds, post if post is not None and post.active else None, selection, f"tuned in {path}"


def _tile_ms(engine: Engine, spec: InputSpec, repeats: int, batch: int) -> float:
    """One stage-2 tile's time (ms) on a full batch of real-sized inputs (best of ``repeats``)."""
    x = torch.randn(batch, spec.channels, spec.model_size, spec.model_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        engine(x)
        best = min(_seconds(lambda: engine(x)) for _ in range(repeats))
    return 1000.0 * best / batch


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _run(call: InferenceCall, image: np.ndarray) -> tuple[float, PhaseTimer]:
    timer = PhaseTimer()
    t0 = time.perf_counter()
    with torch.inference_mode():
        predict_masks(call, image, timer).rle()
    return 1000.0 * (time.perf_counter() - t0), timer


def measure_paths(engine: Engine, spec: InputSpec, images: list[np.ndarray], thresholds_file: str | None,
                  repeats: int, batch: int) -> dict:
    """Every path of :data:`PATHS` that applies to ``engine`` (padding only where it has a tail to do without)
    on ``images``, tiles in batches of ``batch``, interleaved; returns per path the mean over images of each
    image's best run, and the tile time."""
    thresholds, post, selection, source = tuned(thresholds_file)
    base = replace(inference_settings(spec, engine, batch_size=batch), selection=None)
    paths = {"every tile": (engine, base), "selection": (engine, replace(base, selection=selection))}
    if engine.tail is not None:
        paths = {"every tile, padded": (replace(engine, tail=None), base), **paths}
    _run(InferenceCall(engine, paths["selection"][1], thresholds=thresholds, postprocess=post), images[0])  # warm-up
    best: dict = {}
    for _ in range(repeats):
        for i, image in enumerate(images):
            for name, (eng, settings) in paths.items():
                ms, timer = _run(InferenceCall(eng, settings, thresholds=thresholds, postprocess=post), image)
                if (name, i) not in best or ms < best[(name, i)][0]:
                    best[(name, i)] = (ms, timer)
    out = {"source": source, "selection": selection.to_dict(), "tile_ms": _tile_ms(engine, spec, repeats, batch),
           "paths": {}}
    for name in paths:
        runs = [best[(name, i)] for i in range(len(images))]
        out["paths"][name] = {"image_ms": float(np.mean([ms for ms, _ in runs])), **_phases([t for _, t in runs])}
    return out


def _phases(timers: list[PhaseTimer]) -> dict:
    """Mean over images of each phase (ms), the tiles run and possible, and the model's share."""
    def mean(name: str) -> float:
        return 1000.0 * float(np.mean([t.seconds.get(name, 0.0) for t in timers]))

    phases = {k: mean(k) for k in ("preprocess", "stage1", "stage2")}
    phases["after_model"] = mean("blend") + mean("threshold")
    model = phases["stage1"] + phases["stage2"]
    return {**phases, "model_share": model / max(sum(phases.values()), 1e-9),
            "tiles_run": float(np.mean([t.counts.get("tiles_run", 0) for t in timers])),
            "tiles_possible": float(np.mean([t.counts.get("tiles_possible", 0) for t in timers]))}


BASELINE_PROBE = r"""
import json, sys, time
tree, folder, batch, size, n_images, repeats, thresholds_file, threads = sys.argv[1:9]
sys.path.insert(0, tree)  # the baseline revision's packages, ahead of this checkout's
import torch, yaml
torch.set_num_threads(int(threads))
from pathlib import Path
from evaluator.compile_aoti import load_aoti
from handseg.inference.engine import Engine
from handseg.inference.phase_timer import PhaseTimer
from handseg.inference.pipeline import inference_settings, predict_masks
from handseg.inference.postprocess import PostProcessing
from handseg.model.io import InputSpec
from handseg.phantom import render_hand
folder, batch = Path(folder), int(batch)
def older(d):  # keys the baseline's InputSpec may not know: the intensity standardisation, here always "none"
    d = {k: v for k, v in d.items() if not (k == "intensity" and v.get("method", "none") == "none")}
    return {**d, "prior": older(d["prior"])} if isinstance(d.get("prior"), dict) else d
spec = InputSpec.from_dict(older(json.loads((folder / "cascade_spec.json").read_text())))
engine = Engine(fn=load_aoti(folder / f"cascade_b{batch}.pt2"), backend="aot_inductor", batch_size=batch,
                side=spec.model_size, prior=Engine(fn=load_aoti(folder / "cascade_prior.pt2"), backend="aot_inductor",
                                                   batch_size=1, side=spec.prior.model_size))
thresholds, post = 0.5, None
if Path(thresholds_file).is_file():
    data = yaml.safe_load(Path(thresholds_file).read_text())
    thresholds = list(data["thresholds"].values()) if isinstance(data["thresholds"], dict) else data["thresholds"]
    post = PostProcessing.from_dict(data["postprocess"]) if data.get("postprocess") else None
    post = post if post is not None and post.active else None
settings = inference_settings(spec, engine, batch_size=batch)
images = [render_hand(seed, int(size), "R" if seed % 2 == 0 else "L")[0] for seed in range(int(n_images))]
def run(image):
    timer = PhaseTimer()
    t0 = time.perf_counter()
    with torch.inference_mode():
        predict_masks(engine, image, settings, thresholds, postprocess=post, timer=timer).rle()
    return 1000.0 * (time.perf_counter() - t0), timer
run(images[0])
best = [min((run(image) for _ in range(int(repeats))), key=lambda r: r[0]) for image in images]
mean = lambda name: sum(1000.0 * t.seconds.get(name, 0.0) for _, t in best) / len(best)
hwm = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"image_ms": sum(ms for ms, _ in best) / len(best), "preprocess": mean("preprocess"),
                  "engine": mean("engine"), "after_model": mean("blend") + mean("threshold"), "peak_mib": hwm}))
"""


def baseline_paths(rev: str, folder: Path, args, repo: Path) -> dict:
    """The path before (revision ``rev``, checked out into a temporary git worktree) on the same compiled engines
    and hands: every tile, a short batch padded; its whole-image time and phases, from a process of its own."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), rev], cwd=repo, check=True)
        try:
            cmd = [sys.executable, "-c", BASELINE_PROBE, str(tree), str(folder), str(args.cascade_batch),
                   str(args.size), str(args.images), str(args.repeats), str(args.thresholds), str(args.threads)]
            proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict], n_images: int, size: int, threads: int) -> list[str]:
    """The table of :func:`measure_paths`' results per engine kind, the selection's ratio and the compiled gain."""
    lines = [f"\nCascade, deployed: every tile vs the tile selection, {n_images} phantom hands at {size}x{size}, "
             f"{threads} threads; one process per engine, the paths interleaved (best of the repeats per hand)",
             f"{'engine':<8} {'path':<19} {'tiles':>7} {'preproc ms':>11} {'stage 1 ms':>11} {'stage 2 ms':>11} "
             f"{'after ms':>9} {'model':>6} {'image ms':>9} {'vs every':>9} {'tile ms':>8} {'peak MiB':>9}"]
    for kind, res in results.items():
        if kind == "before":
            continue
        every = res["paths"]["every tile"]["image_ms"]
        for name, p in res["paths"].items():
            lines.append(f"{kind:<8} {name:<19} {p['tiles_run']:>3.0f}/{p['tiles_possible']:<3.0f} "
                         f"{p['preprocess']:>11.1f} {p['stage1']:>11.1f} {p['stage2']:>11.1f} {p['after_model']:>9.1f} "
                         f"{p['model_share']:>6.0%} {p['image_ms']:>9.1f} {p['image_ms'] / every:>8.2f}x "
                         f"{res['tile_ms']:>8.1f} {res['peak_mib']:>9.0f}")
    before = results.get("before")
    if before is not None:
        lines.append(f"{'aot':<8} {'before (' + before['rev'] + ')':<19} {'all':>7} {before['preprocess']:>11.1f} "
                     f"{'(in stage 2)':>11} {before['engine']:>11.1f} {before['after_model']:>9.1f} "
                     f"{before['engine'] / before['image_ms']:>6.0%} {before['image_ms']:>9.1f} "
                     f"{before['image_ms'] / results['aot']['paths']['every tile']['image_ms']:>8.2f}x "
                     f"{'':>8} {before['peak_mib']:>9.0f}")
        sel = results["aot"]["paths"]["selection"]["image_ms"] / before["image_ms"]
        lines.append(f"selection against the path before, same engine files: {sel:.2f}x")
    first = results["eager"]
    lines.append(f"selection: {first['selection']} ({first['source']}); after: blend, thresholds, post-processing, "
                 "RLE; peak MiB: VmHWM of the process (its largest path)")
    if {"eager", "aot"} <= set(results):
        tile = results["eager"]["tile_ms"] / results["aot"]["tile_ms"]
        for name in ("every tile", "selection"):
            whole = results["eager"]["paths"][name]["image_ms"] / results["aot"]["paths"][name]["image_ms"]
            lines.append(f"compiled gain ({name}): per tile {tile:.2f}x, whole image {whole:.2f}x "
                         f"({whole / tile:.0%} of the per-tile gain reaches the image)")
    return lines
