"""Train one stage under Accelerate: ``accelerate launch -m trainer.train --cfg-path config/train_stage1.yaml``.

Reads top to bottom like the Accelerate examples: parse arguments, load the config (every problem is a
one-line error before any work), build the model, data, optimiser and schedule, ``accelerator.prepare``,
then loop over epochs: train, validate with the evaluator's inference code, save ``best/`` and ``last/``,
stop early when Dice stops improving. ``resume: true`` continues from ``<output_dir>/state`` exactly.
Usually started through ``accelerate_train.sh``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

from handseg.checkpoint import load_checkpoint
from handseg.config_schema import to_dict
from handseg.errors import ConfigError, cli_main
from handseg.metrics import format_dice_table
from handseg.models import build_model, count_parameters
from trainer import checkpointing as ckpt
from trainer.config import TrainConfig, config_dict, input_spec, load_train_config
from handseg.cache import data_fingerprint
from trainer.data import build_train_loader, load_split, set_epoch
from trainer.ema import EMA
from trainer.loop import EpochContext, agree, sync_buffers, StopFlag, TrainModule, batches_per_epoch, optimizer_steps, train_one_epoch
from trainer.losses import SegLoss
from trainer.optim import LRSchedule, build_optimizer
from trainer.validate import broadcast_mean, inference_settings, validate

EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, type=Path, help="training YAML (config/train_stage1.yaml, ...)")
    parser.add_argument("--dryrun", action="store_true", help="a few train and validation steps, no files; exit 0")
    parser.add_argument("--check-config", action="store_true", help="only validate the config (exit 0 when valid)")
    return parser.parse_args(argv)


def check_trackers(cfg: TrainConfig, cfg_path: Path) -> list[str]:
    """Tracker names for Accelerate; wandb asked for but not installed is a config error."""
    if "wandb" in cfg.logging.trackers:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError(cfg_path, "logging.trackers", "wandb is not installed (pip install wandb, "
                                                            "or use tensorboard)") from None
    return list(dict.fromkeys(cfg.logging.trackers))


def flat_hparams(data: dict, prefix: str = "") -> dict:
    """Nested config -> flat {dotted.key: scalar} (TensorBoard hparams accept only scalars and strings)."""
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


@dataclass
class TrainData:
    """The training fold as a loader and the validation fold as samples (for the evaluator's code path)."""

    train_loader: Any
    val_samples: list
    n_train: int
    fingerprint: str


def build_train_data(cfg: TrainConfig, spec, cfg_path: Path, accelerator: Accelerator) -> TrainData:
    """Split the data root into folds and build this stage's loader; the main process builds the cache first."""
    split = load_split(cfg.data, cfg_path)
    with accelerator.main_process_first():
        loader = build_train_loader(cfg.data, split.train, cfg.stage, cache_samples=split.samples,
                                    mean=spec.mean, std=spec.std, progress=accelerator.is_main_process)
    return TrainData(loader, list(split.val), len(split.train), data_fingerprint(split.samples))


def build_network(cfg: TrainConfig) -> torch.nn.Module:
    """Random init (or ``model.pretrained``), or the weights of ``ckpt`` (stage 2: stage 1's best)."""
    if cfg.ckpt is None:
        return build_model(cfg.model)
    model, _ = load_checkpoint(cfg.ckpt, arch=cfg.model.arch)
    return model.train()


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over all parameters and buffers (bit-exact identity of two processes' weights)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_train_config(args.cfg_path)
    if args.check_config:
        check_trackers(cfg, args.cfg_path)
        return 0
    trackers = [] if args.dryrun else check_trackers(cfg, args.cfg_path)
    output_dir = Path(cfg.output_dir)
    if cfg.resume and not args.dryrun and not ckpt.has_state(output_dir):
        raise ConfigError(args.cfg_path, "resume", f"no saved state in {output_dir / ckpt.STATE_DIR} to resume from")

    accelerator = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    set_seed(cfg.seed)
    spec = input_spec(cfg)
    cfg_dict = config_dict(cfg)

    # Data: the training fold as a loader, the validation fold as samples for the evaluator's code path.
    data = build_train_data(cfg, spec, args.cfg_path, accelerator)
    val_samples = data.val_samples[: cfg.val.max_images] if cfg.val.max_images else data.val_samples
    if args.dryrun:
        val_samples = val_samples[: max(cfg.dryrun_steps, accelerator.num_processes)]
    settings = inference_settings(spec, cfg.val.batch_size, cfg.val.blend)

    # Model, optimiser, loss.
    model = TrainModule(build_network(cfg))
    optimizer = build_optimizer(model, cfg.optim)
    loss_fn = SegLoss(cfg.loss, aux_weight=cfg.model.aux_loss_weight)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, data.train_loader)

    # The schedule counts optimiser steps of this process (all processes step together), so it is
    # stepped by hand once per optimiser step rather than prepared (which steps it num_processes times).
    per_epoch = batches_per_epoch(len(train_loader), cfg.max_train_steps_per_epoch, cfg.grad_accum_steps)
    epochs = cfg.epochs
    if args.dryrun:
        per_epoch, epochs = min(per_epoch, cfg.dryrun_steps * cfg.grad_accum_steps), 1
    schedule = LRSchedule(optimizer, cfg.schedule, total_steps=epochs * optimizer_steps(per_epoch, cfg.grad_accum_steps))
    ema = EMA(accelerator.unwrap_model(model).model, cfg.ema.decay) if cfg.ema.enabled else None
    progress = ckpt.TrainProgress()
    accelerator.register_for_checkpointing(progress, schedule, *([ema] if ema else []))

    if cfg.resume and not args.dryrun:
        ckpt.load_state(accelerator, output_dir)
        accelerator.print(f"resumed from {output_dir / ckpt.STATE_DIR}: epoch {progress.epoch}, step {progress.step}")
    if accelerator.is_main_process and not args.dryrun:
        output_dir.mkdir(parents=True, exist_ok=True)
        ckpt.write_config(output_dir, cfg_dict)
    if trackers:
        accelerator.init_trackers(cfg.run_name, config=flat_hparams(cfg_dict))
    accelerator.print(
        f"stage {cfg.stage} | {cfg.model.arch}/{cfg.model.preset} ({count_parameters(model) / 1e6:.2f} M params) | "
        f"{data.n_train} train / {len(val_samples)} val images | {per_epoch} batches x {epochs} epochs on "
        f"{accelerator.num_processes} process(es), mixed precision {accelerator.mixed_precision} | input {spec.mode} "
        f"{spec.model_size} px" + (" | DRY RUN" if args.dryrun else "")
    )

    stop = StopFlag()
    stop.install()
    ctx = EpochContext(accelerator, model, optimizer, schedule, loss_fn, ema, progress, stop, cfg.clip_grad_norm,
                       cfg.logging.log_every, per_epoch)
    val_record = {"threshold": cfg.val.threshold, "batch_size": settings.batch_size, "blend": settings.blend,
                  "n_images": len(val_samples)}
    record = dict(cfg_dict=cfg_dict, model_cfg=to_dict(cfg.model), spec=to_dict(spec), stage=cfg.stage,
                  fingerprint=data.fingerprint, val_settings=val_record)
    try:
        status = run_epochs(cfg, args.dryrun, accelerator, ctx, train_loader, val_samples, settings, record, epochs)
    finally:
        stop.uninstall()
        if trackers:
            accelerator.end_training()
    debug_dir = os.environ.get("HANDSEG_DEBUG_DIR")  # test hook: each process writes its weights' digest
    if debug_dir:
        final = accelerator.unwrap_model(model).model
        Path(debug_dir, f"weights_rank{accelerator.process_index}.sha256").write_text(weights_digest(final))
    if status == "interrupted":
        accelerator.print(f"interrupted: resumable state saved in {output_dir / ckpt.STATE_DIR} "
                          "(set resume: true to continue)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def run_epochs(cfg, dryrun, accelerator, ctx, train_loader, val_samples, settings, record, epochs) -> str:
    """The epoch loop; returns "done", "early_stop" or "interrupted"."""
    progress, output_dir = ctx.progress, Path(cfg.output_dir)
    stop_after = int(os.environ.get("HANDSEG_DEBUG_SIGINT_AFTER_EPOCH", "0"))  # test hook: simulate Ctrl-C
    while progress.epoch < epochs:
        epoch = progress.epoch
        set_epoch(train_loader, epoch)  # sampler order and per-item augmentation depend on (seed, epoch)
        loader = train_loader
        if progress.batch_in_epoch:  # resuming mid-epoch: same order, skip what was already trained
            loader = accelerator.skip_first_batches(train_loader, progress.batch_in_epoch)
            set_epoch(loader, epoch)
        done = train_one_epoch(ctx, loader, epoch)
        sync_buffers(accelerator, accelerator.unwrap_model(ctx.model), *([ctx.ema.module] if ctx.ema else []))
        if not done:
            if not dryrun:
                ckpt.save_state(accelerator, output_dir)
            return "interrupted"
        progress.epoch, progress.batch_in_epoch = epoch + 1, 0

        summary = None
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == epochs:
            model = ctx.ema.module if ctx.ema is not None else accelerator.unwrap_model(ctx.model).model
            result = validate(accelerator, model, val_samples, settings, cfg.val.threshold)
            mean = broadcast_mean(accelerator, result)
            ctx.schedule.on_validation(mean)
            progress.last_dice = mean
            improved = mean > progress.best_dice
            if improved:
                progress.best_dice, progress.best_epoch, progress.bad_validations = mean, epoch + 1, 0
            else:
                progress.bad_validations += 1
            if result is not None:
                summary = result.summary
                accelerator.print(f"\nvalidation after epoch {epoch + 1} ({summary.n_images} images, "
                                  f"{settings.input.mode} {settings.input.model_size} px):\n"
                                  f"{format_dice_table(summary)}\nmean Dice {summary.mean:.4f} "
                                  f"(best {progress.best_dice:.4f} at epoch {progress.best_epoch})")
                accelerator.log({"val/mean_dice": summary.mean,
                                 **{f"val/dice/{k}": v for k, v in summary.per_class.items()}}, step=progress.step)
                if not dryrun:
                    ckpt.write_validation(output_dir, epoch + 1, result.names, result.per_image_dice, summary)
            if not dryrun:
                save_models(accelerator, ctx, record, summary, improved)
        elif not dryrun:
            save_models(accelerator, ctx, record, None, False)
        if not dryrun:
            ckpt.save_state(accelerator, output_dir)
        if stop_after and progress.epoch == stop_after:
            os.kill(os.getpid(), signal.SIGINT)
        if agree(accelerator, ctx.stop.signum is not None)[0]:
            return "interrupted"
        if cfg.early_stopping_patience and progress.bad_validations >= cfg.early_stopping_patience:
            accelerator.print(f"early stopping: no mean-Dice gain for {progress.bad_validations} validations")
            return "early_stop"
    return "done"


def save_models(accelerator, ctx, record, summary, improved: bool) -> None:
    """``last/`` every epoch, ``best/`` when mean Dice improved (main process; EMA weights when enabled)."""
    if accelerator.is_main_process:
        model = ctx.ema.module if ctx.ema is not None else accelerator.unwrap_model(ctx.model).model
        dice = summary.per_class if summary is not None else None
        mean = summary.mean if summary is not None else None
        info = ckpt.run_record(progress=ctx.progress, dice=dice, mean_dice=mean, **record)
        output_dir = Path(record["cfg_dict"]["output_dir"])
        ckpt.save_model(model, output_dir / "last", info)
        if improved:
            ckpt.save_model(model, output_dir / "best", info)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    sys.exit(main())
