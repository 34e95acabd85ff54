"""scripts/push_to_hub.py without network: the checked folder, the card it makes sure of, the file list.

Every case calls the script's ``main`` in this process (each separate Python would spend seconds importing torch).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from handseg.model.checkpoint import read_info, save_checkpoint
from handseg.model.factory import build_model
from handseg.model.io import InputSpec
from handseg.model.presets import ModelConfig
from tests.commands import run_main
from tests.scripts.test_dataset_summary import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "push_to_hub.py"


_SPEC = importlib.util.spec_from_file_location("push_to_hub", SCRIPT)
push_to_hub = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(push_to_hub)


@pytest.fixture()
def run(capsys):
    """Call the script's main with ``args``; returns a CompletedProcess-like result (exit code, output)."""

    def call(*args: str) -> subprocess.CompletedProcess:
        code = 0
        try:
            push_to_hub.main(list(args))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return call


def checkpoint(folder: Path) -> Path:
    """A tiny checkpoint saved without a card (as older runs were)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="segformer", preset="test")
    info = {"model": cfg, "input": InputSpec(mode="resize", image_size=128, tile_size=128), "stage": 1,
            "epoch": 1, "step": 2, "dice": None, "mean_dice": None, "config": {"run_name": "tiny"},
            "data_fingerprint": "abc"}
    return save_checkpoint(build_model(cfg), folder, info)


def listed(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if line.startswith("  ")]


def test_dry_run_writes_the_missing_card_and_lists_the_upload(tmp_path, run):
    folder = checkpoint(tmp_path / "best")
    (folder / ".scratch").write_text("not for the Hub")
    proc = run(str(folder), "me/hand-bones", "--dry-run", "--private")
    assert proc.returncode == 0, proc.stderr
    assert "(it was missing)" in proc.stdout
    assert "would upload 4 file(s)" in proc.stdout and "https://huggingface.co/me/hand-bones (private)" in proc.stdout
    assert listed(proc.stdout) == ["README.md", "config.json", "handseg.json", "model.safetensors"]
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and "Not validated at this save" in card.text
    read_info(folder)  # the folder is still a valid checkpoint
    again = run(str(folder), "me/hand-bones", "--dry-run")
    assert again.returncode == 0 and f"kept {folder / 'README.md'}" in again.stdout


def test_results_given_rewrite_the_card(tmp_path, run):
    folder = checkpoint(tmp_path / "best")
    eff = tmp_path / "efficiency.json"
    eff.write_text(json.dumps({"device": "cpu", "results": [
        {"engine": "eager_fp32", "batch": 1, "tile_ms_p50": 2.0, "image_ms": 40.0, "images_per_s": 25.0,
         "peak_mem_mib": 300.0}]}))
    proc = run(str(folder), "me/hand-bones", "--dry-run", "--efficiency", str(eff))
    assert proc.returncode == 0, proc.stderr
    assert "(with efficiency)" in proc.stdout
    assert "| eager_fp32 | 1 | 2.00 | 40.0 | 25.00 | 300 | - |" in (folder / "README.md").read_text()


def test_errors_are_one_line(tmp_path, run):
    folder = checkpoint(tmp_path / "best")
    assert_one_line_error(run(str(tmp_path / "nope"), "me/x", "--dry-run"), "nope", "checkpoint folder not found")
    assert_one_line_error(run(str(folder), "bad id!", "--dry-run"), "bad id!", "not a valid Hub repository id")
    (folder / "model.safetensors").unlink()
    assert_one_line_error(run(str(folder), "me/x", "--dry-run"), "model.safetensors", "missing")
    bad = tmp_path / "robustness.json"
    bad.write_text("{")
    good = checkpoint(tmp_path / "good")
    assert_one_line_error(run(str(good), "me/x", "--dry-run", "--robustness", str(bad)), "robustness.json",
                          "malformed JSON")


def test_command_uploads_and_fails_in_one_line_without_network(tmp_path, monkeypatch):
    folder = checkpoint(tmp_path / "best")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub is never contacted
    proc = run_main(push_to_hub.main, folder, "me/hand-bones")
    assert "uploading 4 file(s)" in proc.stdout
    assert_one_line_error(proc, "upload to me/hand-bones failed", "offline")
    assert proc.returncode == 2
