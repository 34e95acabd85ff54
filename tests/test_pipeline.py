"""One inference path: the evaluator's validation of a trained checkpoint (eager engine, the inference
settings training recorded) reproduces the Dice that training measured for that checkpoint, per class, to
1e-4, for a stage-1 model (whole image resized), a stage-2 model (native tiles) and a cascade's stage 2 (native
tiles that also see stage 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluator.config import load_eval_config
from evaluator.run_eval import run
from handseg.format.classes import CLASSES
from tests.trainer.helpers import run_train, tiny_config, write_yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(phantom_root, tmp_path_factory) -> dict[int, Path]:
    """Stage 1 (whole images at 128 px) and stage 2 (128 px native crops) best checkpoints, one epoch each. The
    head starts at bias 0 (``prior_prob: null``) and the learning rate is tiny, so the masks stay large and
    overlap the bones: the per-class Dice values compared below are not all the empty-mask value."""
    work = tmp_path_factory.mktemp("pipeline")
    model = {"arch": "segformer", "preset": "test", "prior_prob": None}
    s1 = write_yaml(work / "s1.yaml", tiny_config(phantom_root, work / "s1", epochs=1, optim={"lr": 1e-5},
                                                  model=model))
    proc = run_train(s1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s2_cfg = tiny_config(phantom_root, work / "s2", stage=2, epochs=1, ckpt=str(work / "s1" / "best"),
                         optim={"lr": 1e-5}, model=model)
    proc = run_train(write_yaml(work / "s2.yaml", s2_cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cascade = tiny_config(phantom_root, work / "s2c", stage=2, epochs=1, ckpt=str(work / "s1" / "best"), cascade=True,
                          optim={"lr": 1e-3}, model=model)
    proc = run_train(write_yaml(work / "s2c.yaml", cascade))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {1: work / "s1" / "best", 2: work / "s2" / "best", "cascade": work / "s2c" / "best"}


@pytest.mark.parametrize("stage", [1, 2, "cascade"])
def test_evaluator_validation_equals_training_validation(trained, stage, phantom_root, tmp_path):
    ckpt = trained[stage]
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
