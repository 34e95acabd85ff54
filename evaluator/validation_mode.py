"""Validation mode: competition Dice on the training run's validation fold, sharded across processes.

The fold is rebuilt exactly as training built it: the run's typed ``data:`` section, parsed from the
checkpoint's record, through :func:`handseg.data.dataset_index.load_split` (the config's ``data_root``, ``fold``,
``n_folds`` and ``seed`` override it where set). Through :func:`handseg.inference.scoring.score_sharded` (the function
training's validation calls) each process scores ``samples[rank::world]`` and the per-image counts are
gathered in the original order.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from evaluator.config import EvalConfig
from evaluator.context import EvalContext
from evaluator.report import write_overlays, write_validation_report
from evaluator.report_html import write_report
from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import load_split
from handseg.inference.scoring import score_sharded
from handseg.model.checkpoint import LoadedCheckpoint, recorded_data_config


def eval_data_config(cfg: EvalConfig, ckpt: LoadedCheckpoint) -> DataConfig:
    """The training run's data section with the evaluation's data root and any fold settings it gives."""
    data = recorded_data_config(ckpt.info, ckpt.folder)
    changes = {"data_root": Path(cfg.data_root)}
    for key in ("fold", "n_folds", "seed"):
        if getattr(cfg, key) is not None:
            changes[key] = getattr(cfg, key)
    return replace(data, **changes)


def validation_samples(cfg: EvalConfig, ckpt: LoadedCheckpoint, file: str | Path = "<config>") -> list:
    """The validation fold of ``cfg.data_root`` as the checkpoint's training run split it."""
    return list(load_split(eval_data_config(cfg, ckpt), file=file, key="config.data").val)


def worst_images(result, samples: list, k: int) -> list[tuple[object, float]]:
    """The ``k`` samples with the lowest mean Dice over classes, with that Dice."""
    by_name = {s.rel: s for s in samples}
    means = np.asarray(result.per_image_dice).mean(axis=1)
    order = np.argsort(means, kind="stable")[:k]
    return [(by_name[result.names[i]], float(means[i])) for i in order if result.names[i] in by_name]


def run_validation(ctx: EvalContext, accelerator=None) -> dict:
    """Score the validation fold of the evaluation ``ctx`` (sharded over ``accelerator``'s processes); on the main
    process write the report. Returns {output name: path}."""
    cfg, ckpt = ctx.cfg, ctx.ckpt
    samples = validation_samples(cfg, ckpt)
    result = score_sharded(ctx.call, samples, accelerator)
    if accelerator is not None and not accelerator.is_main_process:
        return {}
    summary = result.summary()
    out = Path(cfg.output_dir)
    paths = write_validation_report(out, summary, result, meta=report_meta(ctx))
    worst = worst_images(result, samples, cfg.n_worst_overlays)
    paths["overlays"] = write_overlays(out / "overlays", worst, ctx)
    paths["report"] = write_report(out)
    paths["summary"] = summary
    return paths


def report_meta(ctx: EvalContext) -> dict:
    """What the validation report records about how the evaluation ``ctx`` was made."""
    cfg, ckpt, engine, settings, postprocess = ctx.cfg, ctx.ckpt, ctx.engine, ctx.settings, ctx.postprocess
    data = eval_data_config(cfg, ckpt)
    return {
        "checkpoint": str(ckpt.folder),
        "checkpoint_candidates": ckpt.candidates,
        "engine": engine.name,
        "engine_path": str(engine.path) if engine.path else None,
        "fold": data.fold,
        "n_folds": data.n_folds,
        "seed": data.seed,
        "input": settings.input.to_dict(),
        "blend": settings.blend,
        "flip_tta": settings.flip_tta,
        "tile_batch": settings.batch_size,
        "thresholds": cfg.thresholds,
        "postprocess": postprocess.to_dict() if postprocess is not None else None,
        "hand_norm": settings.hand_norm.to_dict() if settings.hand_norm is not None else None,
        "tile_selection": settings.selection.to_dict() if settings.selection is not None else None,
    }
