"""Robustness report: the deployed engine's Dice on the validation fold under controlled perturbations.

Every validation image is evaluated as it is, under each configured (kind, strength) of :mod:`evaluator.perturb`
(rotation, zoom, translation, gamma, contrast, brightness, noise, blur, JPEG), and under the combined rows of
:mod:`evaluator.combined` (every photometric kind at once, alone or with rotation, zoom and translation, drawn
at random per image within ranges); geometric kinds move the polygons with the image, so the ground truth is
rasterised from the moved polygons. The result says, per kind and strength, the mean Dice (per image and class,
mean over images, then over classes), its drop from the unperturbed mean Dice, and whether the drop is within the
kind's tolerance (``tolerance_geometric`` for rotation, zoom and translation, ``tolerance_photometric`` for the
rest); per combined row also the worst image's drop and the Dice of the three smallest bones.

How an image becomes Dice counts is injected (:data:`PredictCounts`), so the evaluation does not depend on how
inference is done; :func:`engine_predict_counts` builds it from an engine and :func:`evaluate_robustness` runs
the whole report for an eval config. Outputs: ``robustness.json``, ``robustness.md`` and ``robustness.png``
(:mod:`evaluator.robustness_chart`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from evaluator.combined import CombinedRow, draw_rows
from evaluator.config import EvalConfig, RobustnessConfig
from evaluator.context import build_context
from evaluator.eval_workers import map_in_workers
from evaluator.perturb import UNITS, Perturbation
from evaluator.robustness_chart import robustness_chart
from evaluator.scale_sweep import SMALL_CLASSES
from evaluator.validation_mode import eval_data_config, validation_samples
from handseg.data.dataset_index import Sample
from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.format.metrics import dice_from_counts
from handseg.inference.hand_norm import describe_reference
from handseg.inference.pipeline import predict_masks
from handseg.inference.settings import InferenceCall
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
    """Evaluate ``samples`` (the first ``cfg.max_images``) unperturbed, under every configured perturbation and
    under every combined row (image i of a row under that row's i-th combination).

    Each image is read once; a progress bar counts images x (1 + perturbations + combined rows). Returns the
    JSON-ready result of :func:`summarize_robustness`.
    """
    samples = _first_images(samples, cfg)
    rows = draw_rows(cfg.combined.ranges, cfg.combined.rows, len(samples), cfg.combined.seed)
    counts = np.zeros((1 + len(cfg.perturbations()) + len(rows), len(samples), NUM_CLASSES, 3), dtype=np.int64)
    with tqdm(total=counts.shape[0] * counts.shape[1], desc="robustness", unit="run", disable=not progress) as bar:
        for i, sample in enumerate(samples):
            counts[:, i] = image_counts(predict_counts, sample, i, cfg, rows, bar.update)
    return summarize_robustness(counts, cfg.perturbations(), [s.rel for s in samples], cfg, rows)


def _first_images(samples: Sequence[Sample], cfg: RobustnessConfig) -> list[Sample]:
    samples = list(samples)[: cfg.max_images] if cfg.max_images else list(samples)
    if not samples:
        raise HandSegError("robustness: no images to evaluate")
    return samples


def image_counts(predict_counts: PredictCounts, sample: Sample, i: int, cfg: RobustnessConfig,
                 rows: Sequence[CombinedRow], tick: Callable[[], object] = lambda: None) -> np.ndarray:
    """(1 + perturbations + combined rows, 29, 3) Dice counts of image ``i`` (``sample``): as it is, under each
    perturbation (seeded with ``cfg.seed + i``) and under each combined row's i-th combination; ``tick`` after each
    prediction."""
    image, polygons = load_sample(sample)
    out = [predict_counts(image, polygons)]
    tick()
    for perturbation in cfg.perturbations():
        out.append(predict_counts(*perturbation.apply(image, polygons, seed=cfg.seed + i)))
        tick()
    for row in rows:
        out.append(predict_counts(*row.combinations[i].apply(image, polygons, seed=row.seeds[i])))
        tick()
    return np.stack(out)


def run_robustness_in_workers(cfg: EvalConfig, file: str | Path, samples: Sequence[Sample], workers: int,
                              progress: bool = True) -> dict:
    """:func:`run_robustness` with the images shared among ``workers`` processes
    (:func:`evaluator.eval_workers.map_in_workers`), each with its own engine from ``cfg``: the same counts."""
    rc = cfg.robustness
    samples = _first_images(samples, rc)
    rows = draw_rows(rc.combined.ranges, rc.combined.rows, len(samples), rc.combined.seed)
    jobs = [(sample, i, len(samples)) for i, sample in enumerate(samples)]
    counts = np.stack(list(map_in_workers(_worker_counter, (cfg, str(file)), jobs, workers, "robustness", "image",
                                          progress)), axis=1)
    return summarize_robustness(counts, rc.perturbations(), [s.rel for s in samples], rc, rows)


def _worker_counter(cfg: EvalConfig, file: str) -> Callable[[Sample, int, int], np.ndarray]:
    """In a worker: the counts of image ``i`` of ``n`` under every row, through the config's engine."""
    rc = cfg.robustness
    predict_counts = engine_predict_counts(build_context(cfg, file, echo=False).call)

    def counter(sample: Sample, i: int, n: int) -> np.ndarray:
        rows = draw_rows(rc.combined.ranges, rc.combined.rows, n, rc.combined.seed)  # the same draws as the parent
        return image_counts(predict_counts, sample, i, rc, rows)

    return counter


def _dice_summary(counts: np.ndarray) -> tuple[float, dict[str, float]]:
    """(N, 29, 3) counts -> (mean Dice over classes, per-class Dice: mean over images)."""
    per_class = dice_from_counts(counts).mean(axis=0)
    return float(per_class.mean()), {name: float(v) for name, v in zip(CLASSES, per_class)}


def summarize_robustness(counts: np.ndarray, perturbations: Sequence[Perturbation], names: Sequence[str],
                         cfg: RobustnessConfig, rows: Sequence[CombinedRow] = ()) -> dict:
    """The JSON-ready result from counts (1 + P + R, N, 29, 3): row 0 unperturbed, row j the j-th perturbation,
    then the R combined ``rows``.

    Returns ``{"n_images", "images", "seed", "tolerances": {"geometric", "photometric"},
    "unperturbed": {"mean_dice", "per_class"}, "perturbations": [{"kind", "strength", "unit", "geometric",
    "mean_dice", "drop", "tolerance", "passed", "per_class"}, ...], "combined": {...} (see
    :func:`summarize_combined`), "passed"}``; ``drop`` is unperturbed minus perturbed mean Dice (positive: worse),
    ``passed`` is ``drop <= tolerance`` for every row, single and combined.
    """
    base_mean, base_per_class = _dice_summary(counts[0])
    singles = []
    for j, p in enumerate(perturbations, start=1):
        mean, per_class = _dice_summary(counts[j])
        tolerance = cfg.tolerance(p.kind)
        drop = base_mean - mean
        singles.append({"kind": p.kind, "strength": p.strength, "unit": UNITS[p.kind], "geometric": p.geometric,
                     "mean_dice": mean, "drop": drop, "tolerance": tolerance, "passed": bool(drop <= tolerance),
                     "per_class": per_class})
    combined = summarize_combined(counts[0], counts[1 + len(perturbations):], rows, names, cfg)
    return {
        "n_images": len(names),
        "images": list(names),
        "seed": cfg.seed,
        "tolerances": {"geometric": cfg.tolerance_geometric, "photometric": cfg.tolerance_photometric},
        "unperturbed": {"mean_dice": base_mean, "per_class": base_per_class},
        "perturbations": singles,
        "combined": combined,
        "passed": all(r["passed"] for r in singles + combined["rows"]),
    }


def summarize_combined(base: np.ndarray, counts: np.ndarray, rows: Sequence[CombinedRow], names: Sequence[str],
                       cfg: RobustnessConfig) -> dict:
    """The combined rows from the unperturbed counts ``base`` (N, 29, 3) and theirs (R, N, 29, 3): ``{"seed",
    "ranges", "tolerances": {family: tolerance}, "rows": [{"family", "draw", "mean_dice", "drop", "worst_drop",
    "worst_image", "small_classes": {class: Dice}, "small_drops": {class: drop}, "tolerance", "passed",
    "per_class", "images": [{"image", "strengths", "drop"}, ...]}, ...]}``; an image's drop is its own mean Dice
    over the classes, unperturbed minus perturbed."""
    base_mean, base_per_class = _dice_summary(base)
    base_images = dice_from_counts(base).mean(axis=1)
    out = []
    for row, row_counts in zip(rows, counts):
        mean, per_class = _dice_summary(row_counts)
        drops = base_images - dice_from_counts(row_counts).mean(axis=1)
        worst = int(np.argmax(drops))
        tolerance = cfg.combined.tolerance(row.family)
        out.append({
            "family": row.family, "draw": row.draw, "mean_dice": mean, "drop": base_mean - mean,
            "worst_drop": float(drops[worst]), "worst_image": names[worst],
            "small_classes": {c: per_class[c] for c in SMALL_CLASSES},
            "small_drops": {c: base_per_class[c] - per_class[c] for c in SMALL_CLASSES},
            "tolerance": tolerance, "passed": bool(base_mean - mean <= tolerance), "per_class": per_class,
            "images": [{"image": name, "strengths": combo.as_dict, "drop": float(d)}
                       for name, combo, d in zip(names, row.combinations, drops)],
        })
    return {"seed": cfg.combined.seed, "ranges": cfg.combined.ranges,
            "tolerances": {family: cfg.combined.tolerance(family) for family in cfg.combined.rows}, "rows": out}


def engine_predict_counts(call: InferenceCall) -> PredictCounts:
    """:data:`PredictCounts` of an engine through the one inference path
    (:func:`handseg.inference.pipeline.predict_masks` with ``call``: the evaluation's engine, settings, device,
    thresholds and post-processing) against the polygons rasterised per class box."""

    def predict_counts(image: np.ndarray, polygons: Sequence[np.ndarray]) -> np.ndarray:
        pred = predict_masks(call, image)
        return pred.counts(ClassMasks.from_polygons(polygons, image.shape))

    return predict_counts


def evaluate_robustness(cfg: EvalConfig, file: str | Path = "<config>", progress: bool = True,
                        workers: int = 1) -> tuple[dict, dict[str, Path]]:
    """The robustness report of the config's engine on its validation fold, written under
    ``<output_dir>/robustness/``; returns (result, {"json", "markdown", "chart": path}).

    Checkpoint, engine, inference settings, thresholds, post-processing and the validation fold are resolved as
    the evaluator's validation mode resolves them. ``workers`` > 1 shares the images among that many processes
    (:func:`run_robustness_in_workers`; for a CPU), with the same result.
    """
    ctx = build_context(cfg, file)
    ckpt, engine, settings = ctx.ckpt, ctx.engine, ctx.settings
    samples = validation_samples(cfg, ckpt, file)
    if workers > 1:
        result = run_robustness_in_workers(cfg, file, samples, workers, progress)
    else:
        result = run_robustness(engine_predict_counts(ctx.call), samples, cfg.robustness, progress=progress)
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
    if result.get("combined", {}).get("rows"):
        lines += ["", format_combined_table(result)]
    return "\n".join(lines)


def format_combined_table(result: dict) -> str:
    """Markdown table of the combined rows (mean Dice, drop, the worst image's drop, the three smallest bones'
    Dice with their drops, pass), then the combination that hurt each row's worst image."""
    combined = result["combined"]
    lines = ["| combined | row | mean Dice | drop | worst image's drop | "
             + " | ".join(SMALL_CLASSES) + " | tolerance | within |",
             "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in SMALL_CLASSES) + " | ---: | :---: |"]
    worst = []
    for r in combined["rows"]:
        small = " | ".join(f"{r['small_classes'][c]:.3f} ({r['small_drops'][c]:+.3f})" for c in SMALL_CLASSES)
        within = "yes" if r["passed"] else "**no**"
        lines.append(f"| {r['family']} | {r['draw'] + 1} | {r['mean_dice']:.4f} | {r['drop']:+.4f} | "
                     f"{r['worst_drop']:+.4f} | {small} | {r['tolerance']:.3f} | {within} |")
        strengths = next(im["strengths"] for im in r["images"] if im["image"] == r["worst_image"])
        worst.append(f"- {r['family']} {r['draw'] + 1}: `{r['worst_image']}` under "
                     + ", ".join(f"{k} {_strength_text(k, round(v, 3))}" for k, v in strengths.items()))
    n_pass = sum(r["passed"] for r in combined["rows"])
    ranges = ", ".join(f"{k} {_strength_text(k, lo)} to {_strength_text(k, hi)}" for k, (lo, hi) in
                       combined["ranges"].items())
    lines += ["", (f"Each row draws one combination per image (seed {combined['seed']}) within: {ranges}; the "
                   "photometric rows combine every photometric kind, the others add rotation, zoom and translation. "
                   f"Small bones: Dice (drop). {n_pass} of {len(combined['rows'])} combined rows within tolerance."),
              "", "The worst image of each row and its combination:", "", *worst]
    return "\n".join(lines)


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

