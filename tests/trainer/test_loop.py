"""One epoch of the training loop on real phantom data: each epoch draws its own order and augmentations, and a
resumed epoch trains exactly the batches that were left; the loss and stop flags are read every few steps on a GPU
and a NaN still names its step; UperNet's auxiliary head is skipped at weight 0; validation precision."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import load_split
from handseg.model.factory import build_model
from handseg.model.presets import ModelConfig
from trainer.loader import DatasetOptions, build_dataset, build_train_loader
from trainer.loop import NonFiniteLossError, TrainModule, train_one_epoch, validation_precision
from trainer.losses import LossConfig, SegLoss
from trainer.optim import LRSchedule, OptimConfig, ScheduleConfig, build_optimizer
from trainer.state import EpochPlan, EpochRun, TrainProgress, TrainState
from trainer.stop_flag import StopFlag


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
        model, optimizer, build_train_loader(cfg, build_dataset(cfg, split.train, 1, DatasetOptions(progress=False))))
    plan = EpochPlan(batches=len(loader), epochs=max(epochs) + 1, grad_accum_steps=1)
    state = TrainState(model=model, optimizer=optimizer, schedule=LRSchedule(optimizer, ScheduleConfig(), 100),
                       ema=None, progress=TrainProgress(batch_in_epoch=start_batch))
    loss = RecordingLoss()
    seen = []
    for epoch in epochs:
        loss.seen = []
        run = EpochRun(plan, loss, None, 100)
        assert train_one_epoch(accelerator, state, loader, epoch=epoch, run=run, stop=StopFlag())
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


class NaNAtCall(SegLoss):
    """The training loss, NaN from its ``at``-th call on."""

    def __init__(self, at: int):
        super().__init__(LossConfig())
        self.at, self.calls = at, 0

    def __call__(self, logits, targets, aux_logits=None):
        self.calls += 1
        loss, parts = super().__call__(logits, targets, aux_logits)
        return (loss * float("nan") if self.calls >= self.at else loss), parts


def _state(phantom_root, tmp_path):
    torch.manual_seed(0)
    cfg = DataConfig(data_root=phantom_root, n_folds=4, image_size=64, batch_size=1, num_workers=0,
                     cache_dir=tmp_path / "cache", augmentations=[])
    accelerator = Accelerator(cpu=True)
    model = TrainModule(build_model(ModelConfig(preset="test")))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    model, optimizer, loader = accelerator.prepare(
        model, optimizer,
        build_train_loader(cfg, build_dataset(cfg, load_split(cfg).train, 1, DatasetOptions(progress=False))))
    state = TrainState(model=model, optimizer=optimizer, schedule=LRSchedule(optimizer, ScheduleConfig(), 100),
                       ema=None, progress=TrainProgress())
    return accelerator, state, loader


@pytest.mark.parametrize("check_every, reads", [(1, 6), (4, 2)])
def test_flags_are_read_every_few_steps_and_a_nan_still_names_its_step(phantom_root, tmp_path, monkeypatch,
                                                                       check_every, reads):
    """Reading the loss waits for the device: with ``check_every`` 4 (a GPU) the flags are read at step 4 and at the
    end of the epoch, not after each of the 6 batches; a NaN loss at step 2 still stops the run naming step 2."""
    import trainer.loop as loop

    calls = []
    real = loop.check_flags
    monkeypatch.setattr(loop, "check_flags", lambda *a: calls.append(1) or real(*a))
    accelerator, state, loader = _state(phantom_root, tmp_path)
    plan = EpochPlan(batches=len(loader), epochs=1, grad_accum_steps=1, check_every=check_every)
    run = EpochRun(plan, SegLoss(LossConfig()), None, 100)
    assert train_one_epoch(accelerator, state, loader, epoch=0, run=run, stop=StopFlag())
    assert len(calls) == reads
    state.progress = TrainProgress()
    with pytest.raises(NonFiniteLossError, match=r"^loss is nan at step 2 \(epoch 1, batch 2\)"):
        train_one_epoch(accelerator, state, loader, epoch=0, run=EpochRun(plan, NaNAtCall(2)), stop=StopFlag())


def test_upernet_without_aux_weight_gives_every_parameter_a_gradient(tiny_upernet_cfg):
    """``aux_loss_weight: 0``: the auxiliary head is not run and is frozen, so DDP finds no trained parameter without
    a gradient (run with a weight of 0, it leaves the head's parameters without one)."""
    torch.manual_seed(0)
    x, labels = torch.randn(2, 3, 64, 64), (torch.rand(2, 29, 64, 64) > 0.9).float()
    for aux, unused in ((False, set()), (True, {"auxiliary_head"})):
        module = TrainModule(build_model(tiny_upernet_cfg), aux=aux)
        logits, aux_logits = module(x)
        assert (aux_logits is None) == (not aux)
        loss, _ = SegLoss(LossConfig(), aux_weight=0.0)(logits, labels, aux_logits)
        loss.backward()
        missing = {n.split(".")[1] for n, p in module.named_parameters() if p.requires_grad and p.grad is None}
        assert missing == unused


def test_validation_runs_in_the_runs_mixed_precision_on_a_gpu_only():
    assert validation_precision("bf16", torch.device("cuda", 0)) == "bf16"
    assert validation_precision("fp16", torch.device("cuda", 1)) == "fp16"
    assert validation_precision("bf16", torch.device("cpu")) == "fp32"  # the CPU demo's figures stay fp32
    assert validation_precision("no", torch.device("cuda", 0)) == "fp32"


def test_reading_the_flags_less_often_changes_no_weight(phantom_root, tmp_path):
    """The loss check only reads: an epoch with the flags read every 4 steps ends with the weights of one read after
    every step, bit for bit."""
    weights = []
    for check_every in (1, 4):
        accelerator, state, loader = _state(phantom_root, tmp_path)
        plan = EpochPlan(batches=len(loader), epochs=1, grad_accum_steps=1, check_every=check_every)
        run = EpochRun(plan, SegLoss(LossConfig()), 1.0, 100)
        train_one_epoch(accelerator, state, loader, epoch=0, run=run, stop=StopFlag())
        weights.append({k: v.clone() for k, v in accelerator.unwrap_model(state.model).state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
