"""Validation mode: competition Dice on the training run's validation fold, sharded across processes.

Through :func:`handseg.validation.evaluate_sharded` (the function training's validation calls) each process
evaluates ``samples[rank::world]`` and the per-image counts are gathered in the original order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluator.config import EvalConfig, _find_key, resolve_split
from handseg.validation import evaluate_sharded


def validation_samples(cfg: EvalConfig, info: dict) -> list:
    """The validation fold of ``cfg.data_root`` with the training run's fold, n_folds, seed (and stratification)."""
    from handseg.dataset_index import assign_folds, index_split, read_meta, split_fold

    samples = index_split(cfg.data_root, "train")
    fold, n_folds, seed = resolve_split(cfg, info)
    stratify = _find_key(info.get("config") or {}, "stratify")
    meta = read_meta(cfg.data_root) if stratify else None
    folds = assign_folds(samples, n_folds=n_folds, seed=seed, stratify=stratify, meta=meta)
    _train, val = split_fold(samples, folds, fold)
    return list(val)


def worst_images(result, samples: list, k: int) -> list[tuple[object, float]]:
    """The ``k`` samples with the lowest mean Dice over classes, with that Dice."""
    by_name = {s.name: s for s in samples} | {s.rel: s for s in samples}
    means = np.asarray(result.per_image_dice).mean(axis=1)
    order = np.argsort(means, kind="stable")[:k]
    return [(by_name[result.names[i]], float(means[i])) for i in order if result.names[i] in by_name]


def run_validation(cfg: EvalConfig, engine, settings, info: dict, device: str, thresholds, accelerator=None) -> dict:
    """Evaluate the validation fold; on the main process write the report. Returns {output name: path}."""
    from handseg.errors import DataFormatError

    samples = validation_samples(cfg, info)
    if not samples:
        raise DataFormatError(cfg.data_root, "the validation fold is empty")
    result = evaluate_sharded(engine, samples, settings, device, thresholds, accelerator)
    if accelerator is not None and not accelerator.is_main_process:
        return {}
    from evaluator.report import write_overlays, write_validation_report

    summary = result.summary()
    out = Path(cfg.output_dir)
    paths = write_validation_report(out, summary, result, meta=_report_meta(cfg, info, engine, settings))
    worst = worst_images(result, samples, cfg.n_worst_overlays)
    paths["overlays"] = write_overlays(out / "overlays", worst, engine, settings, device, thresholds)
    paths["summary"] = summary
    return paths


def _report_meta(cfg: EvalConfig, info: dict, engine, settings) -> dict:
    from dataclasses import asdict

    fold, n_folds, seed = resolve_split(cfg, info)
    return {
        "checkpoint": str(cfg.checkpoint),
        "checkpoint_candidates": cfg.candidates,
        "engine": engine.name,
        "engine_path": str(engine.path) if engine.path else None,
        "fold": fold,
        "n_folds": n_folds,
        "seed": seed,
        "input": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings.input).items()},
        "blend": settings.blend,
        "flip_tta": settings.flip_tta,
        "tile_batch": settings.batch_size,
    }
