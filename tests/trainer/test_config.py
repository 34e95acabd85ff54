"""The training YAML schema: every shipped config loads; bad keys, types, paths and checkpoints are one-line
errors naming the file and the key, raised before any work; loading has no side effects; one rule picks the
Accelerate config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from handseg.runtime.errors import ConfigError
from handseg.runtime.launch_config import CPU_CONFIG, accelerate_config
from tests.commands import run_main
from tests.trainer.helpers import REPO_ROOT, tiny_config, write_yaml
from trainer import train as train_command
from trainer.config import check_paths, checkpoint_problem, input_spec, load_train_config


@pytest.fixture()
def data_root(tmp_path) -> Path:
    """An (empty) folder standing in for a data root: the schema only checks that it exists."""
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    return root


def _load(tmp_path, data_root, **overrides):
    """Both steps the trainer runs before any work: load (values) and check what the config points at."""
    path = write_yaml(tmp_path / "cfg.yaml", tiny_config(data_root, tmp_path / "run", **overrides))
    cfg = load_train_config(path)
    check_paths(cfg, path)
    return path, cfg


def test_tiny_config_loads_and_resolves(tmp_path, data_root):
    path, cfg = _load(tmp_path, data_root, output_dir=None)
    assert cfg.output_dir is None and cfg.run_dir == Path("runs") / "tiny_stage1"  # derived, not written back
    assert cfg.loss.terms[0].name == "bce" and cfg.ema.enabled is False
    spec = input_spec(cfg)
    assert (spec.mode, spec.image_size) == ("resize", 128)


@pytest.mark.parametrize(
    "name",
    ["config/train_stage1.yaml", "config/demo/train_stage1.yaml"],
)
def test_shipped_stage1_configs_are_valid(name, tmp_path, data_root):
    raw = yaml.safe_load((REPO_ROOT / name).read_text())
    raw["data"]["data_root"] = str(data_root)
    cfg = load_train_config(write_yaml(tmp_path / "c.yaml", raw))
    assert cfg.stage == 1 and cfg.data.image_size % 32 == 0


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"epochz": 3}, "epochz"),
        ({"optim": {"lr": 0.001, "momentum": 0.9}}, "optim.momentum"),
        ({"loss": {"terms": [{"name": "dice", "weigth": 1}]}}, "loss.terms[0].weigth"),
        ({"epochs": "ten"}, "epochs"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"schedule": {"name": "linear"}}, "schedule.name"),
        ({"stage": 3}, "stage"),
        ({"logging": {"trackers": ["mlflow"]}}, "logging.trackers[0]"),
        ({"schedule": {"warmup_steps": 3, "warmup_ratio": 0.1}}, "schedule.warmup_steps"),
        ({"ema": {"enabled": True, "decay": 1.5}}, "ema.decay"),
        ({"resume": "yes"}, "resume"),
        ({"data": {"augmentations": [{"name": "Flipp"}]}}, "data.augmentations[0].name"),
        ({"data": {"augmentations": [{"name": "Affine", "rotate": "lots"}]}}, "data.augmentations[0].rotate"),
    ],
)
def test_bad_keys_and_types_name_file_and_key(tmp_path, data_root, overrides, key):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data_root, **overrides)
    assert err.value.key == key
    assert err.value.file.name == "cfg.yaml"
    assert "\n" not in str(err.value)


def test_missing_data_root_says_how_to_make_data(tmp_path):
    path = write_yaml(tmp_path / "cfg.yaml", tiny_config(tmp_path / "nowhere", tmp_path / "run"))
    cfg = load_train_config(path)  # values are fine; the folder is checked by the explicit step
    with pytest.raises(ConfigError) as err:
        check_paths(cfg, path)
    assert err.value.key == "data.data_root" and err.value.file == path
    assert "make_phantom.py" in err.value.problem


def test_one_rule_picks_the_accelerate_config(tmp_path, data_root):
    path = write_yaml(tmp_path / "cfg.yaml", tiny_config(data_root, tmp_path / "run"))
    explicit = write_yaml(tmp_path / "mine.yaml", {"compute_environment": "LOCAL_MACHINE"})
    assert accelerate_config(path, explicit) == explicit
    assert accelerate_config(path) == CPU_CONFIG  # no GPU visible in the tests
    raw = tiny_config(data_root, tmp_path / "run", accelerate_config=str(explicit))
    in_yaml = write_yaml(tmp_path / "cfg2.yaml", raw)
    assert accelerate_config(in_yaml) == explicit
    with pytest.raises(ConfigError) as err:
        accelerate_config(path, tmp_path / "missing.yaml")
    assert err.value.key == "accelerate_config" and "missing.yaml" in err.value.problem


def test_missing_required_key(tmp_path, data_root):
    raw = tiny_config(data_root, tmp_path / "run")
    del raw["run_name"]
    with pytest.raises(ConfigError) as err:
        load_train_config(write_yaml(tmp_path / "cfg.yaml", raw))
    assert err.value.key == "run_name"


def _fake_checkpoint(folder: Path, arch="segformer", preset="test", classes=None) -> Path:
    """A checkpoint folder's files as far as the schema reads them (handseg.json, config.json)."""
    from handseg.format.classes import CLASSES, ID2LABEL

    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"id2label": {str(k): v for k, v in ID2LABEL.items()}}))
    info = {"model": {"arch": arch, "preset": preset, "overrides": {}}, "classes": classes or list(CLASSES)}
    (folder / "handseg.json").write_text(json.dumps(info))
    return folder


def test_stage2_requires_a_matching_checkpoint(tmp_path, data_root):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data_root, stage=2)
    assert err.value.key == "ckpt" and "stage 1" in err.value.problem

    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data_root, stage=2, ckpt=str(tmp_path / "missing" / "best"))
    assert err.value.key == "ckpt" and "not found" in err.value.problem

    good = _fake_checkpoint(tmp_path / "s1" / "best")
    _, cfg = _load(tmp_path, data_root, stage=2, ckpt=str(good))
    assert input_spec(cfg).mode == "tile" and input_spec(cfg).tile_size == 128

    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data_root, stage=2, ckpt=str(good), model={"arch": "upernet", "preset": "test"})
    assert err.value.key == "ckpt" and "segformer/test" in err.value.problem

    other = _fake_checkpoint(tmp_path / "other" / "best", classes=["a", "b"])
    from handseg.model.presets import ModelConfig

    assert "classes" in checkpoint_problem(other, ModelConfig(arch="segformer", preset="test"))


def test_bad_config_from_the_command_line_is_one_line_no_traceback(tmp_path, data_root):
    path = write_yaml(tmp_path / "cfg.yaml", tiny_config(data_root, tmp_path / "run", optimizer={"lr": 1}))
    proc = run_main(train_command.main, "--cfg-path", path)  # the command's main; through the launch script below
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {path}: optimizer: unknown key (allowed: {lines[0].split('allowed: ')[1]}"]
    assert not (tmp_path / "run").exists()


def test_launcher_reports_missing_data_root(tmp_path):
    raw = tiny_config(tmp_path / "no_data", tmp_path / "run", accelerate_config="config/accelerate/cpu.yaml")
    path = write_yaml(tmp_path / "cfg.yaml", raw)
    import subprocess

    proc = subprocess.run(["sh", "accelerate_train.sh", "--cfg-path", str(path)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert f"error: {path}: data.data_root: folder" in proc.stderr
    assert not (tmp_path / "run").exists()
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.parametrize(
    "overrides, key, problem",
    [
        ({"data": {"image_size": 100}}, "data.image_size", "100 is not a multiple of 32"),
        ({"stage": 2, "data": {"crop_size": 100}}, "data.crop_size", "100 is not a multiple of 32"),
        ({"model": {"arch": "upernet", "preset": "test"}, "data": {"image_size": 112}}, "data.image_size",
         "112 is not a multiple of 32"),
    ],
)
def test_input_sides_that_cannot_deploy_are_refused(overrides, key, problem, tmp_path, data_root):
    """A side the model's stride does not divide trains but cannot be compiled to an engine: refused at load."""
    ckpt = _fake_checkpoint(tmp_path / "s1" / "best")
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, data_root, ckpt=str(ckpt), **overrides)
    assert err.value.key == key and problem in err.value.problem and "(try 96 or 128)" in err.value.problem


def test_crop_size_larger_than_the_images_is_refused(tmp_path, phantom_root):
    ckpt = _fake_checkpoint(tmp_path / "s1" / "best")
    raw = tiny_config(phantom_root, tmp_path / "run", stage=2, ckpt=str(ckpt), data={"crop_size": 512})
    path = write_yaml(tmp_path / "cfg.yaml", raw)
    cfg = load_train_config(path)  # values alone are fine: 512 is a multiple of 32
    with pytest.raises(ConfigError) as err:
        check_paths(cfg, path)
    assert err.value.key == "data.crop_size" and "512 is larger than the training images (256x256" in err.value.problem
    raw["data"]["crop_size"] = 256  # as large as the images: fine
    check_paths(load_train_config(write_yaml(path, raw)), path)
