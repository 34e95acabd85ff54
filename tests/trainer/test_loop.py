"""One epoch of the training loop on real phantom data: each epoch draws its own order and augmentations, and a
resumed epoch trains exactly the batches that were left."""

from __future__ import annotations

import torch
from accelerate import Accelerator

from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import load_split
from handseg.model.factory import ModelConfig, build_model
from trainer.loader import build_dataset, build_train_loader
from trainer.loop import StopFlag, TrainModule, train_one_epoch
from trainer.losses import LossConfig, SegLoss
from trainer.optim import LRSchedule, OptimConfig, ScheduleConfig, build_optimizer
from trainer.state import EpochPlan, TrainProgress, TrainState


class RecordingLoss(SegLoss):
    """The training loss, recording a fingerprint of every label batch it sees."""

    def __init__(self):
        super().__init__(LossConfig())
        self.seen: list[float] = []

    def __call__(self, logits, targets, aux_logits=None):
        self.seen.append(float((targets * torch.arange(targets.shape[-1])).sum()))
        return super().__call__(logits, targets, aux_logits)


def _run(phantom_root, tmp_path, epochs: list[int], start_batch: int = 0) -> list[list[float]]:
    torch.manual_seed(0)
    cfg = DataConfig(data_root=phantom_root, n_folds=4, image_size=64, batch_size=1, num_workers=0,
                     cache_dir=tmp_path / "cache", augmentations=[{"name": "HorizontalFlip", "p": 0.5},
                                                                 {"name": "Affine", "rotate": [-30, 30], "p": 1.0}])
    split = load_split(cfg)
    accelerator = Accelerator(cpu=True)
    model = TrainModule(build_model(ModelConfig(preset="test")))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, build_train_loader(cfg, build_dataset(cfg, split.train, 1, progress=False)))
    plan = EpochPlan(batches=len(loader), epochs=max(epochs) + 1, grad_accum_steps=1)
    state = TrainState(model=model, optimizer=optimizer, schedule=LRSchedule(optimizer, ScheduleConfig(), 100),
                       ema=None, progress=TrainProgress(batch_in_epoch=start_batch))
    loss = RecordingLoss()
    seen = []
    for epoch in epochs:
        loss.seen = []
        assert train_one_epoch(accelerator, state, loader, epoch=epoch, plan=plan, loss_fn=loss, clip_grad_norm=None,
                               log_every=100, stop=StopFlag())
        seen.append(loss.seen)
        assert state.progress.epoch == epoch + 1 and state.progress.batch_in_epoch == 0
    return seen


def test_each_epoch_draws_its_own_order_and_augmentations(phantom_root, tmp_path):
    first, second = _run(phantom_root, tmp_path, [0, 1])
    assert len(first) == len(second) == 6  # 6 training images, batch 1
    assert first != second
    assert _run(phantom_root, tmp_path, [1])[0] == second  # an epoch's batches depend on the epoch, not on history


def test_a_resumed_epoch_trains_the_batches_that_were_left(phantom_root, tmp_path):
    whole = _run(phantom_root, tmp_path, [1])[0]
    assert _run(phantom_root, tmp_path, [1], start_batch=2)[0] == whole[2:]
