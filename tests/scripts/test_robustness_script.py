"""scripts/robustness.py, run as a user runs it (its ``main`` in this process), on the tiny phantom data set with a
tiny eager checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.commands import load_script, run_main
from tests.evaluator.conftest import make_checkpoint, write_eval_yaml


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return run_main(load_script("robustness").main, *args)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("runs") / "tiny" / "best")


def test_writes_table_json_and_chart(tmp_path, ckpt, phantom_root):
    strengths = {"rotation": [0, 20], "jpeg": [30]}
    cfg = write_eval_yaml(tmp_path / "eval.yaml", ckpt, tmp_path / "trt", tmp_path / "unused", data_root=phantom_root,
                          backend="eager", robustness={"strengths": strengths})
    res = run("--cfg-path", cfg, "--output-dir", tmp_path / "out", "--max-images", "2", "--quiet")
    assert res.returncode == 0, res.stderr
    out = tmp_path / "out" / "robustness"
    assert sorted(p.name for p in out.iterdir()) == ["robustness.json", "robustness.md", "robustness.png"]
    data = json.loads((out / "robustness.json").read_text())
    assert data["n_images"] == 2
    rows = {(r["kind"], r["strength"]): r for r in data["perturbations"]}
    assert set(rows) == {("rotation", 0.0), ("rotation", 20.0), ("jpeg", 30.0)}
    assert rows["rotation", 0.0]["mean_dice"] == data["unperturbed"]["mean_dice"]
    assert "| rotation | 20 |" in res.stdout and "| jpeg | 30 |" in res.stdout
    assert (out / "robustness.md").read_text().count("\n| ") >= 4
    assert "hand normalisation off" in (out / "robustness.md").read_text()  # thresholds as a number
    assert data["settings"]["hand_norm"] is None
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("problem", ["missing config", "bad strength"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, ckpt, problem):
    if problem == "missing config":
        cfg, expected = tmp_path / "nope.yaml", "config file not found"
    else:
        cfg = write_eval_yaml(tmp_path / "eval.yaml", ckpt, tmp_path / "trt", tmp_path / "out",
                              robustness={"strengths": {"zoom": [-1]}})
        expected = "robustness.strengths.zoom"
    res = run("--cfg-path", cfg)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0]
