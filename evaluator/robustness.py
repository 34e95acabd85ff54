"""Robustness report: the deployed engine's Dice on the validation fold under controlled perturbations.

Every validation image is evaluated as it is and under each configured (kind, strength) of
:mod:`evaluator.perturb` (rotation, zoom, translation, gamma, contrast, noise, blur, JPEG); geometric kinds move
the polygons with the image, so the ground truth is rasterised from the moved polygons. The result says, per
kind and strength, the mean Dice (per image and class, mean over images, then over classes), its drop from the
unperturbed mean Dice, and whether the drop is within the kind's tolerance (``tolerance_geometric`` for
rotation, zoom and translation, ``tolerance_photometric`` for the rest).

How an image becomes Dice counts is injected (:data:`PredictCounts`), so the evaluation does not depend on how
inference is done; :func:`engine_predict_counts` builds it from an engine and :func:`evaluate_robustness` runs
the whole report for an eval config. Outputs: ``robustness.json``, ``robustness.md`` and ``robustness.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from tqdm.auto import tqdm

from evaluator.config import EvalConfig, RobustnessConfig, resolve_postprocess, resolve_thresholds
from evaluator.engines import eval_settings, load_engine, load_eval_checkpoint
from evaluator.perturb import IDENTITY, UNITS, Perturbation
from evaluator.report import save_figure
from evaluator.validation_mode import eval_data_config, validation_samples
from handseg.data.dataset_index import Sample
from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.format.metrics import dice_from_counts
from handseg.inference.engine import Engine
from handseg.inference.hand_norm import describe_reference
from handseg.inference.pipeline import InferenceSettings, PostProcess, predict_masks
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import DataFormatError, HandSegError

# (image (H, W) uint8, 29 polygons in CLASSES order, each (N, 2) x, y) -> (29, 3) int64 Dice counts
# [intersection, predicted, target] of the prediction for the image against the polygons rasterised at its size.
PredictCounts = Callable[[np.ndarray, Sequence[np.ndarray]], np.ndarray]


def load_sample(sample: Sample) -> tuple[np.ndarray, list[np.ndarray]]:
    """(H, W) uint8 image and its 29 polygons (CLASSES order; (0, 2) for a class it lacks) of an annotated sample."""
    if sample.label_path is None:
        raise DataFormatError(sample.image_path, "no annotation JSON for this image")
    image = read_image(sample.image_path)
    ann = read_annotation(sample.label_path, image_hw=image.shape)
    return image, polygons_in_order(ann)


def run_robustness(predict_counts: PredictCounts, samples: Sequence[Sample], cfg: RobustnessConfig,
                   progress: bool = True) -> dict:
    """Evaluate ``samples`` (the first ``cfg.max_images``) unperturbed and under every configured perturbation.

    Each image is read once; a progress bar counts images x (1 + perturbations). Returns the JSON-ready result of
    :func:`summarize_robustness`.
    """
    samples = list(samples)[: cfg.max_images] if cfg.max_images else list(samples)
    if not samples:
        raise HandSegError("robustness: no images to evaluate")
    perturbations = cfg.perturbations()
    counts = np.zeros((1 + len(perturbations), len(samples), NUM_CLASSES, 3), dtype=np.int64)
    with tqdm(total=counts.shape[0] * counts.shape[1], desc="robustness", unit="run", disable=not progress) as bar:
        for i, sample in enumerate(samples):
            image, polygons = load_sample(sample)
            counts[0, i] = predict_counts(image, polygons)
            bar.update()
            for j, perturbation in enumerate(perturbations, start=1):
                counts[j, i] = predict_counts(*perturbation.apply(image, polygons, seed=cfg.seed + i))
                bar.update()
    return summarize_robustness(counts, perturbations, [s.rel for s in samples], cfg)


def _dice_summary(counts: np.ndarray) -> tuple[float, dict[str, float]]:
    """(N, 29, 3) counts -> (mean Dice over classes, per-class Dice: mean over images)."""
    per_class = dice_from_counts(counts).mean(axis=0)
    return float(per_class.mean()), {name: float(v) for name, v in zip(CLASSES, per_class)}


def summarize_robustness(counts: np.ndarray, perturbations: Sequence[Perturbation], names: Sequence[str],
                         cfg: RobustnessConfig) -> dict:
    """The JSON-ready result from counts (1 + P, N, 29, 3): row 0 unperturbed, row j the j-th perturbation.

    Returns ``{"n_images", "images", "seed", "tolerances": {"geometric", "photometric"},
    "unperturbed": {"mean_dice", "per_class"}, "perturbations": [{"kind", "strength", "unit", "geometric",
    "mean_dice", "drop", "tolerance", "passed", "per_class"}, ...], "passed"}``; ``drop`` is unperturbed minus
    perturbed mean Dice (positive: worse), ``passed`` is ``drop <= tolerance``.
    """
    base_mean, base_per_class = _dice_summary(counts[0])
    rows = []
    for j, p in enumerate(perturbations, start=1):
        mean, per_class = _dice_summary(counts[j])
        tolerance = cfg.tolerance(p.kind)
        drop = base_mean - mean
        rows.append({"kind": p.kind, "strength": p.strength, "unit": UNITS[p.kind], "geometric": p.geometric,
                     "mean_dice": mean, "drop": drop, "tolerance": tolerance, "passed": bool(drop <= tolerance),
                     "per_class": per_class})
    return {
        "n_images": len(names),
        "images": list(names),
        "seed": cfg.seed,
        "tolerances": {"geometric": cfg.tolerance_geometric, "photometric": cfg.tolerance_photometric},
        "unperturbed": {"mean_dice": base_mean, "per_class": base_per_class},
        "perturbations": rows,
        "passed": all(r["passed"] for r in rows),
    }


def engine_predict_counts(engine: Engine, settings: InferenceSettings, device: str,
                          thresholds: float | Sequence[float], postprocess: PostProcess | None = None) -> PredictCounts:
    """:data:`PredictCounts` of an engine through the one inference path
    (:func:`handseg.inference.pipeline.predict_masks` with the evaluation's thresholds and post-processing) against
    the polygons rasterised per class box."""

    def predict_counts(image: np.ndarray, polygons: Sequence[np.ndarray]) -> np.ndarray:
        pred = predict_masks(engine, image, settings, thresholds, device, postprocess)
        return pred.counts(ClassMasks.from_polygons(polygons, image.shape))

    return predict_counts


def evaluate_robustness(cfg: EvalConfig, file: str | Path = "<config>",
                        progress: bool = True) -> tuple[dict, dict[str, Path]]:
    """The robustness report of the config's engine on its validation fold, written under
    ``<output_dir>/robustness/``; returns (result, {"json", "markdown", "chart": path}).

    Checkpoint, engine, inference settings, thresholds, post-processing and the validation fold are resolved as
    the evaluator's validation mode resolves them.
    """
    ckpt = load_eval_checkpoint(cfg, file=file)
    engine = load_engine(cfg, ckpt)
    samples = validation_samples(cfg, ckpt, file)
    settings = eval_settings(cfg, ckpt, engine)
    predict_counts = engine_predict_counts(engine, settings, cfg.device, resolve_thresholds(cfg),
                                           resolve_postprocess(cfg))
    result = run_robustness(predict_counts, samples, cfg.robustness, progress=progress)
    data = eval_data_config(cfg, ckpt)
    result["settings"] = {"checkpoint": str(ckpt.folder), "engine": engine.name, "fold": data.fold,
                          "n_folds": data.n_folds, "data_root": str(cfg.data_root),
                          "hand_norm": settings.hand_norm.to_dict() if settings.hand_norm else None}
    return result, write_robustness_report(Path(cfg.output_dir) / "robustness", result)


def _strength_text(kind: str, strength: float) -> str:
    return f"{strength:g}" if kind != "jpeg" else str(int(strength))


def format_robustness_table(result: dict) -> str:
    """Markdown table: the unperturbed row, then one row per (kind, strength) with mean Dice, drop and pass."""
    base = result["unperturbed"]["mean_dice"]
    lines = ["| perturbation | strength | unit | mean Dice | drop | tolerance | within |",
             "| --- | ---: | --- | ---: | ---: | ---: | :---: |",
             f"| none | | | {base:.4f} | | | |"]
    for r in result["perturbations"]:
        lines.append(f"| {r['kind']} | {_strength_text(r['kind'], r['strength'])} | {r['unit']} | "
                     f"{r['mean_dice']:.4f} | {r['drop']:+.4f} | {r['tolerance']:.2f} | "
                     f"{'yes' if r['passed'] else '**no**'} |")
    n_pass = sum(r["passed"] for r in result["perturbations"])
    lines += ["", (f"{result['n_images']} image(s); mean Dice per image and class, mean over images, then over "
                   f"classes; drop = unperturbed minus perturbed. {n_pass} of {len(result['perturbations'])} "
                   "perturbations within tolerance.")]
    return "\n".join(lines)


TITLES = {"noise": "Gaussian noise", "blur": "Gaussian blur", "jpeg": "JPEG compression"}  # panel titles


def robustness_chart(result: dict, path: Path) -> Path:
    """PNG with one panel per kind: mean Dice against strength (a dot within tolerance, a red X outside), the
    unperturbed Dice as a dashed line (and as the curve's point at the identity strength) and the allowed drop
    shaded below it. JPEG quality runs right to left, so every panel gets harsher to the right."""
    rows = result["perturbations"]
    kinds = list(dict.fromkeys(r["kind"] for r in rows))  # config order
    base = result["unperturbed"]["mean_dice"]
    cols = min(4, len(kinds))
    nrows = -(-len(kinds) // cols)
    fig = Figure(figsize=(3.5 * cols, 2.9 * nrows + 0.9), dpi=100)
    axes = fig.subplots(nrows, cols, sharey=True, squeeze=False)
    values = [r["mean_dice"] for r in rows] + [base - max(r["tolerance"] for r in rows), base]
    margin = 0.1 * (max(values) - min(values)) + 0.005
    axes[0, 0].set_ylim(max(0.0, min(values) - margin), min(1.0, max(values) + margin))
    for ax, kind in zip(axes.flat, kinds):
        mine = [r for r in rows if r["kind"] == kind]
        points = [(r["strength"], r["mean_dice"]) for r in mine]
        if kind in IDENTITY:
            points.append((IDENTITY[kind], base))
            ax.plot(IDENTITY[kind], base, "o", color="k", ms=3.5, zorder=3)
        xs, ys = zip(*sorted(points))
        tol = mine[0]["tolerance"]
        ax.axhspan(base - tol, base, color="#4c72b0", alpha=0.15, lw=0)
        ax.axhline(base, color="k", ls="--", lw=1)
        ax.plot(xs, ys, color="#4c72b0", lw=1.2, zorder=2)
        for r in mine:
            ax.plot(r["strength"], r["mean_dice"], "o" if r["passed"] else "X", ms=6 if r["passed"] else 8,
                    zorder=3, color="#2ca02c" if r["passed"] else "#d62728")
        ax.set_title(f"{TITLES.get(kind, kind)} (tolerance {tol:g})", fontsize=10)
        ax.set_xlabel(UNITS[kind], fontsize=9)
        if kind == "jpeg":  # no identity strength: show the quality scale from 100 down, stronger to the right
            ax.set_xlim(100, max(0.0, min(xs) - 10))
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, lw=0.5)
    for ax in axes[:, 0]:
        ax.set_ylabel("mean Dice", fontsize=9)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    legend = [Line2D([], [], color="k", ls="--", lw=1, marker="o", ms=3.5, label=f"unperturbed ({base:.4f})"),
              Rectangle((0, 0), 1, 1, color="#4c72b0", alpha=0.15, lw=0, label="allowed drop (tolerance)"),
              Line2D([], [], color="#2ca02c", marker="o", ls="", label="within tolerance"),
              Line2D([], [], color="#d62728", marker="X", ls="", ms=8, label="outside tolerance")]
    fig.legend(handles=legend, loc="lower center", ncol=4, fontsize=9, frameon=False)
    n_pass = sum(r["passed"] for r in rows)
    fig.suptitle(f"Mean Dice under perturbation: {result['n_images']} validation image(s), "
                 f"{n_pass} of {len(rows)} within tolerance", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_figure(fig, path, layout=False)


def write_robustness_report(out: Path, result: dict) -> dict[str, Path]:
    """Write robustness.json, robustness.md and robustness.png under ``out`` (atomically); returns their paths."""
    settings = result.get("settings", {})
    header = "# Robustness\n\n"
    if settings:
        header += (f"checkpoint `{settings.get('checkpoint')}`, engine `{settings.get('engine')}`, "
                   f"fold {settings.get('fold')} of {settings.get('n_folds')}, hand normalisation "
                   f"{describe_reference(settings.get('hand_norm'))}\n\n")
    return {
        "json": atomic_write_text(out / "robustness.json", json.dumps(result, indent=2) + "\n"),
        "markdown": atomic_write_text(out / "robustness.md", header + format_robustness_table(result) + "\n"),
        "chart": robustness_chart(result, out / "robustness.png"),
    }

