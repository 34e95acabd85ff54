"""EvalConfig: checks of keys, types and values on load; the explicit resolution of checkpoints and thresholds."""

from __future__ import annotations

import pytest
import yaml

from evaluator.config import load_eval_config, resolve_checkpoint, resolve_thresholds
from evaluator.engines import load_eval_checkpoint
from evaluator.validation_mode import eval_data_config
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.runtime.errors import ConfigError


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_missing_checkpoint_key_is_named(tmp_path):
    cfg = _write(tmp_path / "eval.yaml", {"device": "cpu"})
    with pytest.raises(ConfigError) as err:
        load_eval_config(cfg)
    assert err.value.key == "checkpoint" and "missing" in err.value.problem


def test_checkpoint_folder_that_does_not_exist(tmp_path):
    path = _write(tmp_path / "eval.yaml", {"checkpoint": str(tmp_path / "nope")})
    cfg = load_eval_config(path)  # loading checks values only; the folder is looked at when it is resolved
    with pytest.raises(ConfigError) as err:
        resolve_checkpoint(cfg, path)
    assert err.value.key == "checkpoint" and "not found" in err.value.problem and str(path) in str(err.value)


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
    cfg = load_eval_config(_write(tmp_path / "eval.yaml", {"checkpoint": str(tiny_ckpt), "data_root": "elsewhere"}))
    assert cfg.backend == "auto" and cfg.precision == "fp32"
    ckpt = load_eval_checkpoint(cfg)
    data = eval_data_config(cfg, ckpt)  # the training run's typed data section, with the evaluation's data root
    assert (data.fold, data.n_folds, data.seed, str(data.data_root)) == (0, 2, 0, "elsewhere")
    cfg.fold = 1
    assert eval_data_config(cfg, ckpt).fold == 1
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
    tfile.unlink()
    with pytest.raises(ConfigError, match="not found"):
        resolve_thresholds(cfg)


def test_shipped_configs_parse(repo_root, tiny_ckpt):
    for rel in ("config/eval.yaml", "config/demo/eval.yaml"):
        data = yaml.safe_load((repo_root / rel).read_text())
        data["checkpoint"] = str(tiny_ckpt)  # the shipped ones point at trained runs
        from evaluator.config import EvalConfig
        from handseg.runtime.config_schema import from_dict

        cfg = from_dict(EvalConfig, data, file=rel)
        assert cfg.backend in ("auto", "aot_inductor")


def _candidate(folder, seed, mean_dice, fold=0):
    """A saved checkpoint whose handseg.json records a validation mean Dice on ``fold``, as training writes it."""
    import json

    from tests.evaluator.conftest import make_checkpoint

    make_checkpoint(folder, seed=seed)
    info_path = folder / "handseg.json"
    info = json.loads(info_path.read_text())
    info["mean_dice"] = mean_dice
    info["config"]["data"]["fold"] = fold
    info["validation"] = {"n_images": 16}
    info_path.write_text(json.dumps(info))
    return folder


def test_checkpoint_list_takes_the_best_validation_dice(tmp_path, capsys):
    stage2 = _candidate(tmp_path / "stage2", 0, 0.31)
    stage1 = _candidate(tmp_path / "stage1", 1, 0.87)
    cfg = load_eval_config(_write(tmp_path / "eval.yaml", {"checkpoint": [str(stage2), str(stage1)]}))
    assert cfg.checkpoint == [stage2, stage1] and capsys.readouterr().err == ""  # loading chooses nothing
    chosen = resolve_checkpoint(cfg)
    assert chosen.folder == stage1
    assert [(c["checkpoint"], c["mean_dice"]) for c in chosen.candidates] == [(str(stage2), 0.31), (str(stage1), 0.87)]
    assert f"{stage1} has the best validation mean Dice" in capsys.readouterr().err
    assert load_eval_checkpoint(cfg).candidates == chosen.candidates
    # A single folder is used as given, with no comparison.
    single = resolve_checkpoint(load_eval_config(_write(tmp_path / "one.yaml", {"checkpoint": str(stage2)})))
    assert single.folder == stage2 and single.candidates == []


def test_checkpoint_list_refuses_dice_from_other_folds(tmp_path):
    a = _candidate(tmp_path / "a", 0, 0.5, fold=0)
    b = _candidate(tmp_path / "b", 1, 0.9, fold=1)
    with pytest.raises(ConfigError) as err:
        resolve_checkpoint(load_eval_config(_write(tmp_path / "eval.yaml", {"checkpoint": [str(a), str(b)]})))
    assert err.value.key == "checkpoint" and "cannot be compared" in err.value.problem


def test_checkpoint_list_with_a_missing_folder_names_it(tmp_path):
    a = _candidate(tmp_path / "a", 0, 0.5)
    cfg = load_eval_config(_write(tmp_path / "eval.yaml", {"checkpoint": [str(a), str(tmp_path / "gone")]}))
    with pytest.raises(ConfigError) as err:
        resolve_checkpoint(cfg)
    assert err.value.key == "checkpoint" and "gone" in err.value.problem


def test_hand_norm_comes_from_the_thresholds_file_and_can_be_switched_off(tmp_path, tiny_ckpt):
    from evaluator.config import resolve_hand_norm
    from handseg.inference.hand_norm import HandNorm

    tfile = tmp_path / "thresholds.yaml"
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "hand_norm": {"reference_fraction": 0.12}}))
    data = {"checkpoint": str(tiny_ckpt), "thresholds": str(tfile)}
    assert resolve_hand_norm(load_eval_config(_write(tmp_path / "a.yaml", data))) == HandNorm(0.12)
    assert resolve_hand_norm(load_eval_config(_write(tmp_path / "b.yaml", {**data, "hand_norm": False}))) is None
    assert resolve_hand_norm(load_eval_config(_write(tmp_path / "c.yaml", {**data, "thresholds": 0.4}))) is None
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "hand_norm": {"reference_fraction": 1.5}}))
    with pytest.raises(ConfigError, match="hand_norm.reference_fraction"):
        resolve_hand_norm(load_eval_config(tmp_path / "a.yaml"))
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "hand_norm": {"reference_fracton": 0.1}}))
    with pytest.raises(ConfigError, match="reference_fracton"):
        resolve_hand_norm(load_eval_config(tmp_path / "a.yaml"))
    old = {"reference_fraction": 0.12, "tolerance": 0.1, "min_factor": 0.75, "max_factor": 1.4}
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "scale_norm": old}))  # tuned before the orientation
    assert resolve_hand_norm(load_eval_config(tmp_path / "a.yaml")) == HandNorm(0.12, reference_angle=None)
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "scale_norm": {"reference_fraction": 2.0}}))
    with pytest.raises(ConfigError, match="scale_norm.reference_fraction"):
        resolve_hand_norm(load_eval_config(tmp_path / "a.yaml"))


def test_tile_selection_comes_from_the_thresholds_file_and_can_be_switched_off(tmp_path, tiny_ckpt):
    """The margin tuned on validation is used; a file without one gives the default selection; ``tile_selection:
    false`` runs every tile, through the evaluation's inference settings."""
    from evaluator.config import resolve_tile_selection
    from evaluator.engines import eval_settings, load_engine
    from handseg.inference.tile_selection import DEFAULT_MARGIN, TileSelection

    tfile = tmp_path / "thresholds.yaml"
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "tile_selection": {"probability": 0.4, "margin": 32}}))
    data = {"checkpoint": str(tiny_ckpt), "thresholds": str(tfile), "backend": "eager"}
    cfg = load_eval_config(_write(tmp_path / "a.yaml", data))
    assert resolve_tile_selection(cfg) == TileSelection(0.4, 32)
    ckpt = load_eval_checkpoint(cfg)
    assert eval_settings(cfg, ckpt, load_engine(cfg, ckpt)).selection == TileSelection(0.4, 32)
    off = load_eval_config(_write(tmp_path / "b.yaml", {**data, "tile_selection": False}))
    assert resolve_tile_selection(off) is None and eval_settings(off, ckpt, load_engine(off, ckpt)).selection is None
    default = resolve_tile_selection(load_eval_config(_write(tmp_path / "c.yaml", {**data, "thresholds": 0.4})))
    assert default == TileSelection() and default.margin == DEFAULT_MARGIN
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "tile_selection": {"margin": -4}}))
    with pytest.raises(ConfigError, match="tile_selection.margin"):
        resolve_tile_selection(load_eval_config(tmp_path / "a.yaml"))
    tfile.write_text(yaml.safe_dump({"thresholds": 0.5, "tile_selection": {"margn": 4}}))
    with pytest.raises(ConfigError, match="margn"):
        resolve_tile_selection(load_eval_config(tmp_path / "a.yaml"))
