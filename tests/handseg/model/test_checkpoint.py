"""Checkpoint folders: round trip, hashes, atomic replacement, and refusal of bad folders."""

from __future__ import annotations

import errno
import json

import pytest
import torch

from handseg.format.classes import CLASSES
from handseg.model.checkpoint import checkpoint_sha256, load_checkpoint, read_info, save_checkpoint
from handseg.model.factory import build_model, forward_logits
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig
from handseg.runtime.disk import DiskFullError
from handseg.runtime.errors import DataFormatError
from handseg.runtime.file_digest import file_sha256


def _info(cfg: ModelConfig) -> dict:
    return {"model": cfg, "input": InputSpec(mode="tile", image_size=256, tile_size=128), "stage": 2,
            "epoch": 3, "step": 40, "dice": {"mean": 0.5}, "config": {"lr": 1e-3}, "data_fingerprint": "abc"}


def _save(tmp_path, cfg, name="ckpt", seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    folder = save_checkpoint(model, tmp_path / name, _info(cfg))
    return model, folder


def _fail_mid_save(monkeypatch, model, error: BaseException) -> None:
    """Make ``model.save_pretrained`` write part of the weights and then raise ``error``."""
    def fail(self, save_directory, **kwargs):
        (save_directory / "model.safetensors").write_bytes(b"part of a file")
        raise error

    monkeypatch.setattr(type(model), "save_pretrained", fail)


@pytest.mark.parametrize("cfg_name", ["tiny_segformer_cfg", "tiny_upernet_cfg"])
def test_round_trip_same_outputs_and_hash(cfg_name, request, tmp_path):
    cfg = request.getfixturevalue(cfg_name)
    model, folder = _save(tmp_path, cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "handseg.json", "model.safetensors"]
    ckpt = load_checkpoint(folder)
    loaded, info = ckpt.model, ckpt.info
    assert ckpt.folder == folder and ckpt.model_cfg == cfg and ckpt.spec.tile_size == 128
    assert not loaded.training
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(loaded, x), forward_logits(model, x), rtol=0, atol=0)
    assert info["model"] == {"arch": cfg.arch, "preset": "test", "pretrained": None, "aux_loss_weight": 0.4,
                             "prior_prob": 0.01, "overrides": {}}
    assert info["input"]["tile_size"] == 128 and info["input"]["mean"] == [0.485, 0.456, 0.406]
    assert info["classes"] == list(CLASSES)
    assert {"python", "torch", "transformers", "handseg"} <= set(info["versions"])
    resaved = save_checkpoint(loaded, tmp_path / "again", info)
    assert checkpoint_sha256(resaved) == checkpoint_sha256(folder)
    assert len(checkpoint_sha256(folder)) == 64


def test_overwrite_replaces_and_leaves_no_temporaries(tiny_segformer_cfg, tmp_path):
    _, folder = _save(tmp_path, tiny_segformer_cfg, seed=0)
    first = checkpoint_sha256(folder)
    _save(tmp_path, tiny_segformer_cfg, seed=1)
    assert checkpoint_sha256(folder) != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_crash_mid_save_keeps_previous_checkpoint(tiny_segformer_cfg, tmp_path, monkeypatch):
    _, folder = _save(tmp_path, tiny_segformer_cfg, seed=0)
    before = checkpoint_sha256(folder)
    model = build_model(tiny_segformer_cfg)
    _fail_mid_save(monkeypatch, model, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, folder, _info(tiny_segformer_cfg))
    assert checkpoint_sha256(folder) == before
    load_checkpoint(folder)  # still a complete, loadable checkpoint
    monkeypatch.undo()
    save_checkpoint(model, folder, _info(tiny_segformer_cfg))  # the next save cleans up after the crash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_other_classes_are_refused(tiny_segformer_cfg, tmp_path):
    _, folder = _save(tmp_path, tiny_segformer_cfg)
    info = json.loads((folder / "handseg.json").read_text())
    info["classes"] = list(CLASSES[:-1]) + ["Fibula"]
    (folder / "handseg.json").write_text(json.dumps(info))
    with pytest.raises(DataFormatError, match="Fibula"):
        load_checkpoint(folder)


def test_other_id2label_is_refused(tiny_segformer_cfg, tmp_path):
    _, folder = _save(tmp_path, tiny_segformer_cfg)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"]["0"], config["id2label"]["1"] = config["id2label"]["1"], config["id2label"]["0"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataFormatError, match="id2label"):
        load_checkpoint(folder)


def test_other_architecture_is_refused(tiny_segformer_cfg, tmp_path):
    _, folder = _save(tmp_path, tiny_segformer_cfg)
    with pytest.raises(DataFormatError, match="segformer"):
        load_checkpoint(folder, arch="upernet")


def test_corrupt_weights_are_a_data_error(tiny_segformer_cfg, tmp_path):
    _, folder = _save(tmp_path, tiny_segformer_cfg)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError) as err:
        load_checkpoint(folder)
    assert "model.safetensors" in str(err.value)


def test_weights_of_another_model_are_a_data_error(tiny_segformer_cfg, tiny_upernet_cfg, tmp_path):
    _, seg = _save(tmp_path, tiny_segformer_cfg, name="seg")
    _, up = _save(tmp_path, tiny_upernet_cfg, name="up")
    (seg / "model.safetensors").write_bytes((up / "model.safetensors").read_bytes())
    with pytest.raises(DataFormatError, match="model.safetensors"):
        load_checkpoint(seg)


def test_lazy_load_reads_the_model_on_first_use(tiny_segformer_cfg, tmp_path):
    """``lazy=True`` checks the files and the weights' hash now and builds the model when ``.model`` is first used:
    the same weights as an eager load; a file whose hash was rewritten with it fails at first use, naming it."""
    model, folder = _save(tmp_path, tiny_segformer_cfg)
    ckpt = load_checkpoint(folder, lazy=True)
    assert ckpt.loaded_model is None
    assert ckpt.model is ckpt.model and not ckpt.model.training
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(ckpt.model.state_dict()[name], tensor)

    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataFormatError, match="sha256"):  # damage is still caught when the folder is loaded
        load_checkpoint(folder, lazy=True)
    info = json.loads((folder / "handseg.json").read_text())
    info["weights_sha256"] = file_sha256(folder / "model.safetensors")
    (folder / "handseg.json").write_text(json.dumps(info))
    ckpt = load_checkpoint(folder, lazy=True)
    with pytest.raises(DataFormatError, match="model.safetensors"):
        ckpt.model  # noqa: B018


@pytest.mark.parametrize("missing", ["model.safetensors", "handseg.json", "config.json"])
def test_missing_file_is_a_data_error(missing, tiny_segformer_cfg, tmp_path):
    _, folder = _save(tmp_path, tiny_segformer_cfg)
    (folder / missing).unlink()
    with pytest.raises(DataFormatError, match=missing):
        load_checkpoint(folder)


def test_missing_folder_and_malformed_info(tiny_segformer_cfg, tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(DataFormatError):
        checkpoint_sha256(tmp_path / "nothing")
    _, folder = _save(tmp_path, tiny_segformer_cfg)
    (folder / "handseg.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="malformed JSON"):
        read_info(folder)


def test_wrapped_model_and_substitute_weights(tiny_segformer_cfg, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_segformer_cfg).eval()
    torch.manual_seed(1)
    ema = build_model(tiny_segformer_cfg).eval()

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel looks like from outside
        def __init__(self, module):
            super().__init__()
            self.module = module

    folder = save_checkpoint(Wrapper(model), tmp_path / "ema", _info(tiny_segformer_cfg), state_dict=ema.state_dict())
    loaded = load_checkpoint(folder).model
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(loaded, x), forward_logits(ema, x), rtol=0, atol=0)
        assert not torch.allclose(forward_logits(loaded, x), forward_logits(model, x))


def _data_offset(path) -> int:
    """Where a safetensors file's tensor data starts (8-byte header length, then the JSON header)."""
    import struct

    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_weights_are_checksummed_and_damage_is_named(tiny_segformer_cfg, tmp_path):
    import numpy as np

    _, folder = _save(tmp_path, tiny_segformer_cfg)
    original = checkpoint_sha256(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    start = _data_offset(weights)
    data[start + 4000 : start + 5000] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))  # same size, valid header: only the checksum can tell
    with pytest.raises(DataFormatError) as err:
        load_checkpoint(folder)
    message = str(err.value)
    assert message.startswith(f"{weights}: ") and "sha256" in message and "handseg.json" in message
    assert "\n" not in message
    assert json.loads((folder / "handseg.json").read_text())["weights_sha256"] == original


def test_checkpoints_without_a_recorded_checksum_still_load(tiny_segformer_cfg, tmp_path):
    model, folder = _save(tmp_path, tiny_segformer_cfg)
    info = json.loads((folder / "handseg.json").read_text())
    info.pop("weights_sha256", None)  # as written before checksums were recorded
    (folder / "handseg.json").write_text(json.dumps(info))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(load_checkpoint(folder).model, x), forward_logits(model, x))


def test_full_disk_is_one_line_and_leaves_the_previous_checkpoint(tiny_segformer_cfg, tmp_path, monkeypatch):
    _, folder = _save(tmp_path, tiny_segformer_cfg, seed=0)
    before = checkpoint_sha256(folder)
    model = build_model(tiny_segformer_cfg)
    _fail_mid_save(monkeypatch, model, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(model, folder, _info(tiny_segformer_cfg))
    message = str(err.value)
    assert message.startswith(f"{folder}: disk full while writing a checkpoint (needs about ") and "free)" in message
    assert "MiB" in message or "KiB" in message
    assert checkpoint_sha256(folder) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_staging_names_are_unique_and_a_killed_save_is_cleaned_up(tiny_segformer_cfg, tmp_path):
    """Two writers never share a staging folder; leftovers of a dead writer go, a live writer's stay."""
    import subprocess
    import sys

    from handseg.runtime.atomic import staging_dir

    _, folder = _save(tmp_path, tiny_segformer_cfg)
    mine, again = staging_dir(folder), staging_dir(folder)
    assert mine != again and mine.name.startswith(f".ckpt.{__import__('os').getpid()}.")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".ckpt.{int(dead.stdout)}.abc.tmp"
    stale.mkdir()
    _save(tmp_path, tiny_segformer_cfg, seed=1)
    assert not stale.exists() and mine.exists() and again.exists()
