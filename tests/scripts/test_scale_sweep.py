"""scripts/scale_sweep.py on tiny phantom data: one row per input scale, the trained one marked, the same Dice
as the evaluator's scoring at that scale."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from handseg.data.dataset_index import load_split
from handseg.inference.engine import eager_engine
from handseg.inference.scoring import score_images
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.checkpoint import load_checkpoint, recorded_data_config
from tests.commands import load_script, run_main
from tests.evaluator.conftest import make_checkpoint


def test_sweep_rows_and_script(phantom_root, tmp_path):
    ckpt_dir = make_checkpoint(tmp_path / "run" / "best", mode="resize")  # trained at 128 px whole images
    proc = run_main(load_script("scale_sweep").main, "--checkpoint", ckpt_dir, "--data-root", phantom_root, "--sides",
                    "64", "128", "--tiles", "64", "--max-images", "2", "--out", tmp_path / "sweep")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep" / "scale_sweep.json").read_text())["rows"]
    assert [r["input"] for r in rows] == ["whole image at 64 px", "whole image at 128 px", "native 64 px tiles"]
    assert [r["trained"] for r in rows] == [False, True, False]
    assert "**whole image at 128 px** (trained)" in proc.stdout
    # The trained scale's row is the evaluator's own score of the validation fold the run recorded.
    ckpt = load_checkpoint(ckpt_dir)
    data = replace(recorded_data_config(ckpt.info, ckpt.folder), data_root=phantom_root)
    samples = load_split(data).val[:2]
    call = InferenceCall(eager_engine(ckpt.model), InferenceSettings(input=ckpt.spec))
    direct = score_images(call, samples, progress=False)
    assert rows[1]["mean_dice"] == pytest.approx(direct.summary().mean, abs=1e-9)
    assert all(0.0 <= r["mean_dice"] <= 1.0 for r in rows)
    assert len({round(r["mean_dice"], 9) for r in rows}) > 1  # the scales really differ
