"""One inference path: the evaluator's validation of a trained checkpoint (eager engine, the inference
settings training recorded) reproduces the Dice that training measured for that checkpoint, per class, to
1e-4, for a stage-1 model (whole image resized), a stage-2 model (native tiles) and a cascade's stage 2 (native
tiles that also see stage 1). The checkpoints are the shared tiny run's (``tiny_run``: the head starts at bias 0
and the learning rates are small, so the masks stay large and overlap the bones, and the per-class Dice values
compared below are not all the empty-mask value)."""

from __future__ import annotations

import json

import pytest

from evaluator.config import load_eval_config
from evaluator.run_eval import run
from handseg.format.classes import CLASSES
from tests.trainer.helpers import write_yaml

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stage", [1, 2, "cascade"])
def test_evaluator_validation_equals_training_validation(tiny_run, stage, phantom_root, tmp_path):
    ckpt = {1: tiny_run.stage1, 2: tiny_run.stage2, "cascade": tiny_run.cascade}[stage] / "best"
    info = json.loads((ckpt / "handseg.json").read_text())
    assert info["stage"] == (2 if stage == "cascade" else stage)
    assert info["input"]["mode"] == ("resize" if stage == 1 else "tile")
    assert (info["input"]["prior"] is not None) == (stage == "cascade")
    cfg_path = write_yaml(tmp_path / "eval.yaml", {
        "checkpoint": str(ckpt), "data_root": str(phantom_root), "backend": "eager", "device": "cpu",
        "precision": "fp32", "batch_size_eval": info["validation"]["batch_size"], "output_dir": str(tmp_path / "out"),
        "engine_dir": str(tmp_path / "engines"), "n_worst_overlays": 1,
    })
    out = run("validation", load_eval_config(cfg_path))
    summary = out["summary"]
    assert summary.n_images == info["validation"]["n_images"]
    assert summary.mean == pytest.approx(info["mean_dice"], abs=1e-4)
    for name in CLASSES:
        assert summary.per_class[name] == pytest.approx(info["dice"][name], abs=1e-4), name
    # The comparison means something only if the model's masks overlap the bones somewhere.
    assert max(summary.per_class.values()) > 0.01
