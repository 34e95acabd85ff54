"""Train one stage under Accelerate: ``accelerate launch -m trainer.train --cfg-path config/train_stage1.yaml``.

Reads top to bottom like the Accelerate examples: load and check the config (every problem is a one-line
error before any work), build the accelerator, the data, the model, optimiser and loss, ``accelerator.prepare``,
resume if asked, then loop over epochs: train, validate with the evaluator's scoring code, save ``best/``,
``last/`` and the resumable state, stop early when Dice stops improving. The output folder is locked for the
run (a second run on it is refused). Ctrl-C or SIGTERM (also to the launcher) saves the state and exits 130;
``resume: true`` continues from ``<output_dir>/state`` exactly, also from a stop in mid-epoch. A full disk stops
the run with one line naming the last good state. Usually started through ``accelerate_train.sh``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator, InitProcessGroupKwargs
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object, set_seed

from handseg.data.dataset_index import DataSplit, load_split
from handseg.inference.settings import InferenceSettings
from handseg.model.checkpoint import LoadedCheckpoint, load_checkpoint
from handseg.model.factory import build_model, cascade_refiner
from handseg.model.presets import ModelConfig
from handseg.runtime.config_schema import to_dict
from handseg.runtime.devices import require_launched_device
from handseg.runtime.errors import ConfigError, HandSegError, cli_main
from handseg.runtime.overrides import add_set_argument, blame, parse_overrides
from handseg.runtime.run_lock import locked_folder
from trainer import checkpointing
from trainer.config import TrainConfig, check_paths, input_spec, load_train_config
from trainer.decoding import data_fingerprint
from trainer.ema import EMA
from trainer.loader import DatasetOptions, build_dataset, build_train_loader
from trainer.loop import TrainModule, agree, broadcast_mean, train_one_epoch, validate
from trainer.losses import SegLoss
from trainer.optim import LRSchedule, build_optimizer
from trainer.rng import seed_process
from trainer.run_lines import announce_start, report_validation, run_summary
from trainer.state import EpochPlan, EpochRun, TrainProgress, TrainState
from trainer.stop_flag import StopFlag
from trainer.tracking import check_trackers, tracking

EXIT_INTERRUPTED = 130
# Long enough for one process to wait while another checks a large cache or saves a large state; the cache itself
# is built before the processes start (trainer.prepare, run by accelerate_train.sh).
PROCESS_GROUP_TIMEOUT = timedelta(minutes=60)
FLAG_CHECK_EVERY = 10  # optimiser steps between checks of the loss and stop flags on a GPU (each check syncs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg-path", required=True, type=Path, help="training YAML (config/train_stage1.yaml, ...)")
    parser.add_argument("--dryrun", action="store_true", help="a few train and validation steps, no files; exit 0")
    parser.add_argument("--check-config", action="store_true", help="only check the config (exit 0 when valid)")
    add_set_argument(parser)
    return parser.parse_args(argv)


def check_config(cfg_path: Path, sets: list[str], dryrun: bool) -> tuple[TrainConfig, list[str]]:
    """Load the config with its ``--set`` overrides and check what it points at and the trackers it names: every
    problem a one-line ConfigError before any work. Returns the config and the tracker names."""
    cfg = load_train_config(cfg_path, sets=sets)
    try:
        check_paths(cfg, cfg_path)
    except ConfigError as exc:
        raise blame(exc, parse_overrides(sets, cfg_path)) from None
    return cfg, [] if dryrun else check_trackers(cfg, cfg_path)


@dataclass
class Network:
    """The network a stage trains, its config (what checkpoints record), and a cascade's frozen stage 1."""

    model: torch.nn.Module
    config: ModelConfig
    prior: LoadedCheckpoint | None = None


def build_network(cfg: TrainConfig) -> Network:
    """Random init (or ``model.pretrained``); stage 2: the weights of ``ckpt`` (stage 1's best); a cascade's stage 2:
    a refiner built from stage 1 (:func:`handseg.model.factory.cascade_refiner`), with stage 1 kept as its prior."""
    if cfg.ckpt is None:
        return Network(build_model(cfg.model), cfg.model)
    stage1 = load_checkpoint(cfg.ckpt, arch=cfg.model.arch)
    if not cfg.cascade:
        return Network(stage1.model.train(), cfg.model)
    refiner, refiner_cfg = cascade_refiner(stage1.model, stage1.model_cfg)
    return Network(refiner.train(), refiner_cfg, prior=stage1)


@dataclass
class Validation:
    """The validation fold and how it is scored: the evaluator's inference settings at the stage's input spec."""

    samples: list
    settings: InferenceSettings
    threshold: float
    every: int

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether to validate after (0-based) ``epoch``: every ``every`` epochs and after the last."""
        return (epoch + 1) % self.every == 0 or epoch + 1 == epochs


def build_validation(cfg: TrainConfig, spec, split: DataSplit, dryrun: bool, processes: int) -> Validation:
    samples = split.val[: cfg.val.max_images] if cfg.val.max_images else list(split.val)
    if dryrun:
        samples = samples[: max(cfg.dryrun_steps, processes)]
    settings = InferenceSettings(input=spec, batch_size=cfg.val.batch_size, blend=cfg.val.blend)
    return Validation(samples=samples, settings=settings, threshold=cfg.val.threshold, every=cfg.val_every)


def build_state(cfg: TrainConfig, accelerator: Accelerator, model, optimizer, plan: EpochPlan) -> TrainState:
    """Schedule, EMA and progress around the prepared model and optimiser (saved and restored by
    :mod:`trainer.checkpointing`). The schedule counts this process's optimiser steps (all processes step
    together), so it is stepped by hand once per optimiser step rather than prepared (which would step it
    num_processes times)."""
    return TrainState(model=model, optimizer=optimizer,
                      schedule=LRSchedule(optimizer, cfg.schedule, total_steps=plan.total_steps),
                      ema=EMA(accelerator.unwrap_model(model).model, cfg.ema.decay) if cfg.ema.enabled else None,
                      progress=TrainProgress())


def save_epoch(cfg: TrainConfig, accelerator: Accelerator, state: TrainState, record: checkpointing.RunRecord,
               result, best: bool) -> None:
    """``last/`` (and ``best/``; a cascade's with its stage 1 as ``prior/``), the validation report and the
    resumable state after an epoch."""
    if accelerator.is_main_process:
        summary = result.summary() if result is not None else None
        info = record.info(state.progress, summary.per_class if summary else None, summary.mean if summary else None)
        checkpointing.save_models(state.network(accelerator), cfg.run_dir, info, best,
                                  prior=cfg.ckpt if cfg.cascade else None)
        if result is not None:
            checkpointing.write_validation(cfg.run_dir, state.progress.epoch, result)
    accelerator.wait_for_everyone()
    checkpointing.save_state(accelerator, cfg.run_dir, state)


def check_replicas(accelerator: Accelerator, model: torch.nn.Module) -> None:
    """Every process must end with the same weights (sha256 over all tensors), else DDP went wrong."""
    if accelerator.num_processes == 1:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().float().numpy().tobytes())
    digests = gather_object([digest.hexdigest()])
    if len(set(digests)) != 1:
        raise HandSegError(f"the {len(digests)} processes ended with different weights (sha256 {digests})")
    accelerator.print(f"weights identical on {len(digests)} processes")


def build_accelerator(cfg: TrainConfig, trackers: list[str]) -> Accelerator:
    return Accelerator(
        gradient_accumulation_steps=cfg.grad_accum_steps, log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(cfg.run_dir), logging_dir=str(cfg.run_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)])


def plan_epochs(cfg: TrainConfig, loader_len: int, dryrun: bool, device: torch.device) -> EpochPlan:
    """Micro-batches per epoch: the loader's length, capped at ``max_train_steps_per_epoch`` optimiser steps (a
    dry run: ``dryrun_steps`` of one epoch). The loss and stop flags are checked after every optimiser step on the
    CPU and every ``FLAG_CHECK_EVERY`` on a GPU, where a check waits for the device."""
    batches = min(loader_len, (cfg.max_train_steps_per_epoch or loader_len) * cfg.grad_accum_steps)
    check = 1 if device.type == "cpu" else FLAG_CHECK_EVERY
    if dryrun:
        return EpochPlan(batches=min(batches, cfg.dryrun_steps * cfg.grad_accum_steps), epochs=1,
                         grad_accum_steps=cfg.grad_accum_steps, check_every=check)
    return EpochPlan(batches=batches, epochs=cfg.epochs, grad_accum_steps=cfg.grad_accum_steps, check_every=check)


def build_record(cfg: TrainConfig, network: Network, split: DataSplit,
                 validation: Validation) -> checkpointing.RunRecord:
    settings = validation.settings
    return checkpointing.RunRecord(
        config=to_dict(cfg), model=to_dict(network.config), input=settings.input.to_dict(), stage=cfg.stage,
        data_fingerprint=data_fingerprint(split.samples),
        validation={"threshold": validation.threshold, "batch_size": settings.batch_size, "blend": settings.blend,
                    "n_images": len(validation.samples)})


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg, trackers = check_config(args.cfg_path, args.set, args.dryrun)
    if args.check_config:
        return 0
    if cfg.resume and not args.dryrun and not checkpointing.has_state(cfg.run_dir):
        raise ConfigError(args.cfg_path, "resume", f"no saved state in {cfg.run_dir / checkpointing.STATE_DIR}")
    accelerator = build_accelerator(cfg, trackers)
    require_launched_device(accelerator.device)
    announce_start(cfg, accelerator)
    with locked_folder(cfg.run_dir, "training", accelerator, enabled=not args.dryrun):
        return train(cfg, args, accelerator, trackers)


def train(cfg: TrainConfig, args: argparse.Namespace, accelerator: Accelerator, trackers: list[str]) -> int:
    """The run itself, in the locked output folder: data, model, resume, then the epochs; the exit code."""
    set_seed(cfg.seed)
    network = build_network(cfg)  # the same initial weights on every process
    seed_process(cfg.seed, accelerator.process_index)
    spec = input_spec(cfg, network.prior.spec if network.prior else None)

    # Data: the training fold as a loader (the main process builds the cache first), the validation fold as samples.
    split = load_split(cfg.data, args.cfg_path)
    with accelerator.main_process_first():
        options = DatasetOptions(cache_samples=split.samples, spec=spec, progress=accelerator.is_main_process)
        dataset = build_dataset(cfg.data, split.train, cfg.stage, options)
    loader = build_train_loader(cfg.data, dataset)
    validation = build_validation(cfg, spec, split, args.dryrun, accelerator.num_processes)

    # Model, optimiser and loss; prepare; then schedule, EMA and progress; resume (the generators restored last).
    model = TrainModule(network.model, network.prior.model if network.prior else None,
                        aux=cfg.model.aux_loss_weight > 0)
    optimizer = build_optimizer(model, cfg.optim)
    loss_fn = SegLoss(cfg.loss, aux_weight=cfg.model.aux_loss_weight)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    plan = plan_epochs(cfg, len(loader), args.dryrun, accelerator.device)
    state = build_state(cfg, accelerator, model, optimizer, plan)
    if cfg.resume and not args.dryrun:
        checkpointing.load_state(accelerator, cfg.run_dir, state)
        accelerator.print(f"resumed from {cfg.run_dir / checkpointing.STATE_DIR}: epoch {state.progress.epoch}, "
                          f"step {state.progress.step}")
    run = EpochRun(plan, loss_fn, cfg.clip_grad_norm, cfg.logging.log_every)
    record = build_record(cfg, network, split, validation)
    if accelerator.is_main_process and not args.dryrun:
        checkpointing.write_config(cfg.run_dir, record.config)
    with StopFlag() as stop, tracking(accelerator, cfg, trackers, record.config):
        # Announced once SIGINT/SIGTERM are handled: a signal after this line saves a resumable state.
        sizes, spec = (len(split.train), len(validation.samples)), validation.settings.input
        dry = " | DRY RUN" if args.dryrun else ""
        accelerator.print(run_summary(cfg, accelerator, model, sizes, spec, plan) + dry)
        for epoch in range(state.progress.epoch, plan.epochs):
            if not train_one_epoch(accelerator, state, loader, epoch=epoch, run=run, stop=stop):
                return interrupted(cfg, accelerator, state, save=not args.dryrun)
            result, best = None, False
            if validation.due(epoch, plan.epochs):
                result = validate(accelerator, state.network(accelerator), validation.samples, validation.settings,
                                  validation.threshold, state.prior(accelerator))
                best = state.progress.record_validation(broadcast_mean(accelerator, result))
                state.schedule.on_validation(state.progress.last_dice)
                report_validation(accelerator, state, validation.settings.input, result)
            if not args.dryrun:
                save_epoch(cfg, accelerator, state, record, result, best)
            if agree(accelerator, stop.signum is not None)[0]:
                return interrupted(cfg, accelerator, state, save=False)  # this epoch's state is saved already
            if cfg.early_stopping_patience and state.progress.bad_validations >= cfg.early_stopping_patience:
                accelerator.print(f"early stopping: no mean-Dice gain for {state.progress.bad_validations} validations")
                break
        check_replicas(accelerator, accelerator.unwrap_model(state.model))  # before end_training ends the group
    return 0


def interrupted(cfg: TrainConfig, accelerator: Accelerator, state: TrainState, save: bool) -> int:
    """Save the resumable state when ``save`` and say how to continue; exit code 130."""
    if save:
        checkpointing.save_state(accelerator, cfg.run_dir, state)
    if checkpointing.has_state(cfg.run_dir):
        accelerator.print(f"interrupted: resumable state saved in {cfg.run_dir / checkpointing.STATE_DIR} "
                          "(set resume: true to continue)", file=sys.stderr)
    else:
        accelerator.print("interrupted: nothing saved", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
