"""EvalConfig: validation of keys, types and paths; resolution against the checkpoint."""

from __future__ import annotations

import pytest
import yaml

from evaluator.config import load_eval_config, resolve_split, resolve_thresholds
from handseg.classes import CLASSES, NUM_CLASSES
from handseg.errors import ConfigError


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_checkpoint_key_is_named(tmp_path):
    cfg = _write(tmp_path / "eval.yaml", {"device": "cpu"})
    with pytest.raises(ConfigError) as err:
        load_eval_config(cfg)
    assert err.value.key == "checkpoint" and "missing" in err.value.problem


def test_checkpoint_folder_that_does_not_exist(tmp_path):
    cfg = _write(tmp_path / "eval.yaml", {"checkpoint": str(tmp_path / "nope")})
    with pytest.raises(ConfigError) as err:
        load_eval_config(cfg)
    assert err.value.key == "checkpoint" and "not found" in err.value.problem


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"backend": "onnx"}, "backend"),
        ({"precision": "int8"}, "precision"),
        ({"device": "gpu0"}, "device"),
        ({"thresholds": [0.5] * 3}, "thresholds"),
        ({"thresholds": 1.5}, "thresholds"),
        ({"batch_size_eval": 0}, "batch_size_eval"),
        ({"tile_szie": 512}, "tile_szie"),
        ({"efficiency": {"iters": "ten"}}, "efficiency.iters"),
        ({"efficiency": {"backends": ["onnx"]}}, "efficiency.backends"),
    ],
)
def test_bad_values_name_the_key(tmp_path, tiny_ckpt, extra, key):
    cfg = _write(tmp_path / "eval.yaml", {"checkpoint": str(tiny_ckpt), **extra})
    with pytest.raises(ConfigError) as err:
        load_eval_config(cfg)
    assert err.value.key == key
    assert str(cfg) in str(err.value)


def test_defaults_resolve_from_the_checkpoint(tmp_path, tiny_ckpt):
    from handseg.checkpoint import read_info

    cfg = load_eval_config(_write(tmp_path / "eval.yaml", {"checkpoint": str(tiny_ckpt)}))
    assert cfg.backend == "auto" and cfg.precision == "fp32"
    assert resolve_split(cfg, read_info(tiny_ckpt)) == (0, 2, 0)
    cfg.fold = 1
    assert resolve_split(cfg, read_info(tiny_ckpt))[0] == 1
    assert resolve_thresholds(cfg) == [0.5] * NUM_CLASSES


def test_thresholds_file_by_class_name(tmp_path, tiny_ckpt):
    values = {c: 0.3 + 0.01 * i for i, c in enumerate(CLASSES)}
    tfile = tmp_path / "thresholds.yaml"
    tfile.write_text(yaml.safe_dump({"thresholds": values}))
    cfg = load_eval_config(_write(tmp_path / "eval.yaml", {"checkpoint": str(tiny_ckpt), "thresholds": str(tfile)}))
    assert resolve_thresholds(cfg) == pytest.approx([values[c] for c in CLASSES])
    del values["Pisiform"]
    tfile.write_text(yaml.safe_dump({"thresholds": values}))
    with pytest.raises(ConfigError, match="Pisiform"):
        resolve_thresholds(cfg)


def test_shipped_configs_parse(repo_root, tiny_ckpt):
    for rel in ("config/eval.yaml", "config/demo/eval.yaml"):
        data = yaml.safe_load((repo_root / rel).read_text())
        data["checkpoint"] = str(tiny_ckpt)  # the shipped ones point at trained runs
        from handseg.config_schema import from_dict
        from evaluator.config import EvalConfig

        cfg = from_dict(EvalConfig, data, file=rel)
        assert cfg.backend in ("auto", "aot_inductor")
