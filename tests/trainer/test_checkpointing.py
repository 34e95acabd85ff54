"""What training writes: model folders with their model card, and the resumable state (exact, no pickle, a full
disk named in one line)."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard

from handseg.format.classes import CLASSES
from handseg.model.factory import build_model
from handseg.model.io import InputSpec
from handseg.runtime.config_schema import to_dict
from tests.trainer.helpers import tiny_config, write_yaml
from trainer.checkpointing import RunRecord, load_state, save_models, save_state
from trainer.config import load_train_config
from trainer.ema import EMA
from trainer.loop import TrainModule
from trainer.optim import LRSchedule, OptimConfig, ScheduleConfig, build_optimizer
from trainer.state import TrainProgress, TrainState


def test_save_models_writes_the_model_card(tmp_path, phantom_root, tiny_segformer_cfg):
    cfg = load_train_config(write_yaml(tmp_path / "train.yaml", tiny_config(phantom_root, tmp_path / "run")))
    per_class = {name: 0.5 for name in CLASSES}
    record = RunRecord(config=to_dict(cfg), model=to_dict(cfg.model),
                       input=to_dict(InputSpec(mode="resize", image_size=128, tile_size=128)), stage=1,
                       data_fingerprint="abc", validation={"threshold": 0.5, "n_images": 2})
    info = record.info(TrainProgress(epoch=1, step=3), per_class, 0.5)
    torch.manual_seed(0)
    save_models(build_model(tiny_segformer_cfg), tmp_path / "run", info, best=True)
    assert (tmp_path / "run" / "last" / "README.md").is_file()
    card = ModelCard.load(tmp_path / "run" / "best" / "README.md")
    assert card.data.pipeline_tag == "image-segmentation" and card.data.eval_results[0].metric_value == 0.5
    assert "# tiny_stage1: hand-bone X-ray segmentation" in card.text


# The resumable state: an exact round trip in the project's own format (no pickle), and a full disk.

@pytest.fixture()
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)


def _train_state(accelerator, model_cfg, seed: int) -> TrainState:
    """A real training state around the `test` SegFormer: prepared model and AdamW, schedule, EMA, progress."""
    torch.manual_seed(seed)
    model = TrainModule(build_model(model_cfg))
    optimizer = build_optimizer(model, OptimConfig(lr=1e-3))
    model, optimizer = accelerator.prepare(model, optimizer)
    return TrainState(model=model, optimizer=optimizer, schedule=LRSchedule(optimizer, ScheduleConfig(), 10),
                      ema=EMA(accelerator.unwrap_model(model).model, 0.9), progress=TrainProgress())


def _steps(accelerator, state: TrainState, n: int) -> None:
    """``n`` optimiser steps in train mode (dropout draws from the global generator, as the inputs do)."""
    state.model.train()
    for _ in range(n):
        logits, _ = state.model(torch.randn(2, 3, 64, 64))
        accelerator.backward(logits.float().sigmoid().mean())
        state.optimizer.step()
        state.optimizer.zero_grad()
        state.schedule.step()
        state.ema.update(accelerator.unwrap_model(state.model).model)
        state.progress.step += 1


def _tensors(state: TrainState, accelerator) -> dict[str, torch.Tensor]:
    out = {f"model/{k}": v for k, v in accelerator.unwrap_model(state.model).state_dict().items()}
    out.update({f"ema/{k}": v for k, v in state.ema.module.state_dict().items()})
    for i, slots in state.optimizer.state_dict()["state"].items():
        out.update({f"optim/{i}/{k}": v for k, v in slots.items()})
    return out


def test_state_round_trip_is_exact_and_holds_no_pickle(accelerator, tiny_segformer_cfg, tmp_path):
    saved = _train_state(accelerator, tiny_segformer_cfg, seed=0)
    _steps(accelerator, saved, 3)
    saved.progress.epoch, saved.progress.batch_in_epoch = 1, 2
    folder = save_state(accelerator, tmp_path / "run", saved)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["ema.json", "ema.safetensors", "model.json", "model.safetensors", "optimizer.json",
                     "optimizer.safetensors", "rng_0.json", "rng_0.safetensors", "trainer_state.json"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["state"]  # no staging left behind
    before = {k: v.clone() for k, v in _tensors(saved, accelerator).items()}
    _steps(accelerator, saved, 2)  # the uninterrupted run goes on from the saved point

    torch.manual_seed(123)  # another process, another start
    resumed = _train_state(accelerator, tiny_segformer_cfg, seed=1)
    load_state(accelerator, tmp_path / "run", resumed)
    assert (resumed.progress.epoch, resumed.progress.step, resumed.progress.batch_in_epoch) == (1, 3, 2)
    assert resumed.schedule.step_count == 3 and resumed.ema.updates == 3
    loaded = _tensors(resumed, accelerator)
    assert loaded.keys() == before.keys() and all(torch.equal(loaded[k], before[k]) for k in before)
    _steps(accelerator, resumed, 2)
    after, expected = _tensors(resumed, accelerator), _tensors(saved, accelerator)
    assert all(torch.equal(after[k], expected[k]) for k in expected)  # bit for bit, dropout included


class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_state_is_never_unpickled(accelerator, tiny_segformer_cfg, tmp_path):
    import pickle

    from handseg.runtime.errors import DataFormatError

    state = _train_state(accelerator, tiny_segformer_cfg, seed=0)
    folder = save_state(accelerator, tmp_path / "run", state)
    marker = tmp_path / "unpickled"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        (folder / name).write_bytes(pickle.dumps(_Payload(marker)))
    load_state(accelerator, tmp_path / "run", _train_state(accelerator, tiny_segformer_cfg, seed=1))
    assert not marker.exists()
    # A state in Accelerate's pickle format (an earlier version) is refused, not read.
    (folder / "trainer_state.json").unlink()
    with pytest.raises(DataFormatError, match="pickle format") as err:
        load_state(accelerator, tmp_path / "run", _train_state(accelerator, tiny_segformer_cfg, seed=1))
    assert str(err.value).startswith(f"{folder}: ") and not marker.exists()


def test_full_disk_during_a_save_names_the_last_good_state(accelerator, tiny_segformer_cfg, tmp_path, monkeypatch):
    import errno

    import trainer.tree_io
    from handseg.runtime.disk import DiskFullError

    state = _train_state(accelerator, tiny_segformer_cfg, seed=0)
    _steps(accelerator, state, 3)
    state.progress.epoch = 1
    save_state(accelerator, tmp_path / "run", state)
    good = {k: v.clone() for k, v in _tensors(state, accelerator).items()}
    _steps(accelerator, state, 3)
    state.progress.epoch = 2

    def full(tensors, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(trainer.tree_io, "save_file", full)
    with pytest.raises(DiskFullError) as err:
        save_state(accelerator, tmp_path / "run", state)
    folder = tmp_path / "run" / "state"
    message = str(err.value)
    assert message.startswith(f"{folder}: disk full while writing the training state (needs about ")
    assert " free); nothing was replaced; the last good state is " in message and "\n" not in message
    assert message.endswith(f"{folder} (epoch 1, step 3; resume: true continues from it)")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["state"]  # the staging folder is gone
    monkeypatch.undo()
    resumed = _train_state(accelerator, tiny_segformer_cfg, seed=1)
    load_state(accelerator, tmp_path / "run", resumed)
    loaded = _tensors(resumed, accelerator)
    assert all(torch.equal(loaded[k], good[k]) for k in good)

    def full_models(self, save_directory, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    model = accelerator.unwrap_model(state.model).model
    monkeypatch.setattr(type(model), "save_pretrained", full_models)
    with pytest.raises(DiskFullError) as err:
        save_models(model, tmp_path / "run", {"model": tiny_segformer_cfg}, best=False)
    assert str(err.value).startswith(f"{tmp_path / 'run' / 'last'}: disk full while writing a checkpoint")
    assert str(err.value).endswith(f"the last good state is {folder} (epoch 1, step 3; resume: true continues from it)")
