"""Checkpoint folders: round trip, hashes, atomic replacement, and refusal of bad folders."""

from __future__ import annotations

import json

import pytest
import torch

from handseg.checkpoint import checkpoint_sha256, load_checkpoint, read_info, save_checkpoint
from handseg.classes import CLASSES
from handseg.errors import DataFormatError
from handseg.model_io import InputSpec
from handseg.models import ModelConfig, build_model, forward_logits


def _info(cfg: ModelConfig) -> dict:
    return {"model": cfg, "input": InputSpec(mode="tile", image_size=256, tile_size=128), "stage": 2,
            "epoch": 3, "step": 40, "dice": {"mean": 0.5}, "config": {"lr": 1e-3}, "data_fingerprint": "abc"}


def _save(tmp_path, cfg, name="ckpt", seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    folder = save_checkpoint(model, tmp_path / name, _info(cfg))
    return model, folder


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

    def crash(self, save_directory, **kwargs):
        (save_directory / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save_pretrained", crash)
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
