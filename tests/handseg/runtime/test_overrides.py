"""--set key.sub=value: parsed as YAML, merged into the file, checked like it, and a problem names the --set."""

from __future__ import annotations

import pytest

from evaluator.config import load_eval_config
from handseg.runtime.errors import ConfigError
from handseg.runtime.overrides import apply_overrides, parse_override, parse_overrides
from trainer.config import load_train_config

STAGE1 = "config/train_stage1.yaml"


def test_values_are_yaml(repo_root):
    cfg = load_train_config(repo_root / STAGE1, sets=["data.batch_size=2", "model.pretrained=null",
                                                      "data.augmentations=[]", "epochs=1", "val={threshold: 0.4}"])
    assert cfg.data.batch_size == 2 and cfg.model.pretrained is None and cfg.data.augmentations == []
    assert cfg.epochs == 1 and cfg.val.threshold == 0.4
    assert cfg.val.batch_size == 8  # a mapping merges into the file's section: the other keys stay
    shipped = load_train_config(repo_root / STAGE1)
    assert shipped.model.pretrained == "nvidia/mit-b3" and shipped.data.batch_size == 8


def test_later_set_wins_and_nested_paths_are_created():
    data = apply_overrides({"a": {"b": 1, "c": 2}}, parse_overrides(["a.b=3", "a.b=4", "x.y.z=[1, 2]", "a={d: 5}"]))
    assert data == {"a": {"b": 4, "c": 2, "d": 5}, "x": {"y": {"z": [1, 2]}}}
    assert parse_override("device=cuda:1").value == "cuda:1" and parse_override("k=").value is None


@pytest.mark.parametrize("text, key, said", [
    ("model.pretraned=null", "model.pretraned", "unknown key"),
    ("data.batch_size=two", "data.batch_size", "expected an integer"),
    ("epochs=0", "epochs", "must be >= 1"),
    ("stage2.crop=3", "stage2", "unknown key"),
])
def test_a_bad_set_is_one_line_naming_the_key_and_the_set(repo_root, text, key, said):
    with pytest.raises(ConfigError) as err:
        load_train_config(repo_root / STAGE1, sets=[text])
    assert err.value.key == key and said in err.value.problem
    assert str(err.value).endswith(f"(from --set {text})") and "\n" not in str(err.value)


def test_an_error_the_set_did_not_cause_is_not_blamed_on_it(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("checkpoint: runs/x/best\ndevise: cpu\n")
    with pytest.raises(ConfigError) as err:
        load_eval_config(cfg, sets=["precision=fp32"])
    assert err.value.key == "devise" and "--set" not in str(err.value)


@pytest.mark.parametrize("text", ["data.batch_size", "=3", "a..b=1", ".a=1"])
def test_a_malformed_set_is_named(text):
    with pytest.raises(ConfigError) as err:
        parse_override(text, "cfg.yaml")
    assert err.value.key == "--set" and text in str(err.value)


def test_the_commands_take_set(repo_root, capsys):
    """tensorrt_aot.py and evaluate_efficiency.py check the config with its --set before any work."""
    import evaluate_efficiency
    import tensorrt_aot

    for main in (tensorrt_aot.main, evaluate_efficiency.main):
        with pytest.raises(SystemExit) as exit_:
            main(["--cfg-path", str(repo_root / "config/eval.yaml"), "--set", "batch_size_evl=2"])
        assert exit_.value.code == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("error: ") and line.endswith("(from --set batch_size_evl=2)") and "\n" not in line
