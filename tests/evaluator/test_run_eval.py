"""Validation and submission modes on the phantom data set, with the tiny checkpoint and the eager engine. (A
successful validation through ``accelerate_eval.sh``: ``tests/test_gpu_chain.py``, which runs the shipped configs'
commands end to end.)"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from evaluator.config import load_eval_config
from evaluator.context import build_context
from evaluator.run_eval import main as run_eval_main
from evaluator.run_eval import run
from handseg.format.classes import CLASSES
from handseg.runtime.errors import DataFormatError
from tests.commands import load_script, run_main

from .conftest import write_eval_yaml


def decode_rle(rle: str, h: int, w: int) -> np.ndarray:
    """Independent decoder: 'start length ...' pairs, 1-based starts, row-major."""
    flat = np.zeros(h * w, dtype=np.uint8)
    nums = [int(v) for v in rle.split()]
    for start, length in zip(nums[0::2], nums[1::2]):
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape(h, w)


@pytest.fixture()
def eager_cfg(tmp_path, tiny_ckpt, engine_dir, phantom_root):
    def make(data_root=phantom_root, **extra):
        path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out",
                               data_root=data_root, backend="eager", **extra)
        return load_eval_config(path)

    return make


def test_validation_equals_score_images(eager_cfg):
    from evaluator.engines import eval_settings, load_eval_checkpoint
    from evaluator.validation_mode import validation_samples
    from handseg.inference.engine import eager_engine
    from handseg.inference.scoring import score_images
    from handseg.inference.settings import InferenceCall

    cfg = eager_cfg()
    out = run("validation", cfg)
    ckpt = load_eval_checkpoint(cfg)
    engine = eager_engine(ckpt.model)
    samples = validation_samples(cfg, ckpt)
    assert len(samples) == 4  # 2 of 4 people, two hands each
    direct = score_images(InferenceCall(engine, eval_settings(cfg, ckpt, engine), "cpu"), samples, progress=False)
    assert out["summary"].mean == pytest.approx(direct.summary().mean, abs=1e-4)
    for name in CLASSES:
        assert out["summary"].per_class[name] == pytest.approx(direct.summary().per_class[name], abs=1e-4)
    table = list(csv.reader(out["csv"].read_text().splitlines()))
    assert table[0] == ["class", "dice"] and [r[0] for r in table[1:30]] == list(CLASSES) and table[30][0] == "mean"
    assert "Pisiform" in out["markdown"].read_text()
    assert out["chart"].stat().st_size > 1000
    assert len(out["overlays"]) == 1 and out["overlays"][0].stat().st_size > 0


def test_overlay_colours():
    from evaluator.report import FN_RGB, FP_RGB, TP_RGB, overlay_rgb

    image = np.zeros((4, 4), np.uint8)
    pred = np.zeros((29, 4, 4), bool)
    target = np.zeros((29, 4, 4), bool)
    pred[0, 0, 0] = target[0, 0, 0] = True  # TP
    pred[3, 1, 1] = True  # FP
    target[5, 2, 2] = True  # FN
    rgb = overlay_rgb(image, pred, target)
    for (y, x), colour in (((0, 0), TP_RGB), ((1, 1), FP_RGB), ((2, 2), FN_RGB)):
        assert np.argmax(rgb[y, x]) == int(np.argmax(colour)) and rgb[y, x].max() > 100
    assert rgb[3, 3].max() == 0


def _predicted_masks(cfg, sample):
    from evaluator.config import resolve_thresholds
    from evaluator.engines import eval_settings, load_eval_checkpoint
    from handseg.data.image_io import read_image
    from handseg.inference.engine import eager_engine
    from handseg.inference.pipeline import predict_probs, threshold_probs

    ckpt = load_eval_checkpoint(cfg)
    engine = eager_engine(ckpt.model)
    image = read_image(sample.image_path)
    probs = predict_probs(engine, image, eval_settings(cfg, ckpt, engine), "cpu")
    return threshold_probs(probs, resolve_thresholds(cfg)).numpy().astype(np.uint8)


def test_submission_round_trip_and_order(eager_cfg, phantom_root):
    from evaluator.submission_mode import test_samples

    cfg = eager_cfg()
    out = run("submission", cfg)
    rows = list(csv.reader(out["csv"].read_text().splitlines()))
    assert rows[0] == ["image_name", "class", "rle"]
    sample_rows = list(csv.reader((phantom_root / "sample_submission.csv").read_text().splitlines()))
    assert [r[:2] for r in rows[1:]] == [r[:2] for r in sample_rows[1:]]  # sample_submission's order wins
    samples = test_samples(phantom_root)
    assert len(rows) - 1 == 29 * len(samples)
    lookup = {(r[0], r[1]): r[2] for r in rows[1:]}
    for sample in samples:
        masks = _predicted_masks(cfg, sample)
        assert masks.sum() > 0
        h, w = masks.shape[1:]
        decoded = np.stack([decode_rle(lookup[(sample.name, c)], h, w) for c in CLASSES])
        np.testing.assert_array_equal(decoded, masks)

    # Without a sample submission: images by path under test/DCM, classes in CLASSES order.
    data = phantom_root.parent / "nosample"
    if not data.exists():
        shutil.copytree(phantom_root / "test", data / "test")
    out2 = run("submission", eager_cfg(data_root=data, output_dir=str(data / "out")))
    rows2 = list(csv.reader(out2["csv"].read_text().splitlines()))
    expected = [(s.name, c) for s in sorted(samples, key=lambda s: s.rel) for c in CLASSES]
    assert [tuple(r[:2]) for r in rows2[1:]] == expected


def test_both_modes_in_one_run_write_what_two_runs_write(eager_cfg, tmp_path, monkeypatch):
    """``--mode validation submission``: one context (the engine built once), the validation's files and lines
    first, then the submission's; the files equal those of two separate runs."""
    import evaluator.run_eval as run_eval

    cfg = eager_cfg()
    separate = {"dice": run("validation", cfg)["json"].read_bytes(), "csv": run("submission", cfg)["csv"].read_bytes()}
    shutil.rmtree(cfg.output_dir)
    built = []
    monkeypatch.setattr(run_eval, "build_context", lambda *a, **k: built.append(1) or build_context(*a, **k))
    proc = run_main(run_eval_main, "--mode", "validation", "submission", "--cfg-path", tmp_path / "eval.yaml")
    assert proc.returncode == 0, proc.stderr
    assert built == [1]
    lines = proc.stdout.splitlines()
    first_csv = next(i for i, line in enumerate(lines) if line.startswith("csv:") and line.endswith("submission.csv"))
    assert next(i for i, line in enumerate(lines) if line.startswith("mean Dice")) < first_csv
    out = Path(cfg.output_dir)
    assert (out / "dice.json").read_bytes() == separate["dice"]
    assert (out / "submission.csv").read_bytes() == separate["csv"]


def test_unreadable_png_is_listed_and_no_csv(eager_cfg, phantom_root, tmp_path, capsys):
    from evaluator.submission_mode import SubmissionIncompleteError

    data = tmp_path / "data"
    shutil.copytree(phantom_root / "test", data / "test")
    pngs = sorted((data / "test" / "DCM").rglob("*.png"))
    pngs[1].write_bytes(b"not a png at all")
    cfg = eager_cfg(data_root=data)
    with pytest.raises(SubmissionIncompleteError) as err:
        run("submission", cfg)
    assert "1 of" in str(err.value) and "no submission CSV" in str(err.value)
    printed = capsys.readouterr().out
    assert pngs[1].name in printed and pngs[0].name not in printed
    assert not (tmp_path / "out" / "submission.csv").exists()


def test_test_folder_without_pngs(eager_cfg, tmp_path):
    data = tmp_path / "empty"
    (data / "test" / "DCM" / "ID001").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="no PNG"):
        run("submission", eager_cfg(data_root=data))


def test_tune_thresholds_writes_a_file_eval_yaml_reads(eager_cfg, tmp_path):
    import yaml

    from evaluator.config import resolve_postprocess, resolve_thresholds

    cfg = eager_cfg()
    out = tmp_path / "thresholds.yaml"
    proc = run_main(load_script("tune_thresholds").main, "--cfg-path", tmp_path / "eval.yaml", "--bins", "20",
                    "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = yaml.safe_load(out.read_text())
    assert f"thresholds -> {out}" in proc.stdout
    assert result["mean_dice_tuned"] >= result["mean_dice_at_0.5"] - 1e-9
    assert result["mean_dice_tuned_postprocessed"] >= result["mean_dice_tuned"] - 1e-9  # kept only where it helps
    assert set(result["postprocess"]) == set(CLASSES)
    cfg.thresholds = str(out)
    values = resolve_thresholds(cfg)
    assert len(values) == 29 and all(0 < v < 1 for v in values)
    chosen = resolve_postprocess(cfg)
    assert (chosen is not None) == any(any(v.values()) for v in result["postprocess"].values())
    # The tuned thresholds and the chosen post-processing give the reported Dice through the evaluator itself.
    summary = run("validation", cfg)["summary"]
    assert summary.mean == pytest.approx(result["mean_dice_tuned_postprocessed"], abs=1e-3)


def _run_eval_sh(repo_root, cfg_path, out_dir):
    import subprocess

    return subprocess.run(["sh", str(repo_root / "accelerate_eval.sh"), "--mode", "validation", "--cfg-path",
                           str(cfg_path), "--output-dir", str(out_dir)],
                          capture_output=True, text=True, cwd=repo_root, timeout=300)


def test_evaluation_refuses_damaged_weights_in_one_line(tmp_path, tiny_ckpt, engine_dir, phantom_root):
    """1000 random bytes in the weights' data: the evaluator names the file (exit 2) instead of evaluating garbage.
    (An error of the launched evaluator through ``accelerate_eval.sh``, one line and exit 2 without the launcher's
    traceback: ``test_accelerate_eval_sh_error_after_launch_is_one_line_exit_2``.)"""
    import struct

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    start = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    data[start + 2000 : start + 3000] = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    weights.write_bytes(bytes(data))
    cfg_path = write_eval_yaml(tmp_path / "eval.yaml", folder, engine_dir, tmp_path / "out", data_root=phantom_root,
                               backend="eager")
    proc = run_main(run_eval_main, "--mode", "validation", "--cfg-path", cfg_path, "--output-dir", tmp_path / "out")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {weights}: ") and "sha256" in lines[0]
    assert not (tmp_path / "out" / "dice.json").exists()


def test_accelerate_eval_sh_error_after_launch_is_one_line_exit_2(tmp_path, tiny_ckpt, engine_dir, repo_root):
    """An error raised inside the launched evaluator (here: no data root) is its one line and exit 2, without
    Accelerate's CalledProcessError traceback after it."""
    cfg_path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out",
                               data_root=tmp_path / "nodata", backend="eager")
    proc = _run_eval_sh(repo_root, cfg_path, tmp_path / "out")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nodata" in lines[0]


def test_second_evaluation_on_one_output_dir_is_refused(eager_cfg, tmp_path, repo_root):
    """Another process holds the output folder: the evaluation is refused in one line naming its PID."""
    import subprocess
    import sys

    eager_cfg()
    out = tmp_path / "shared"
    hold = ("import sys, time; from handseg.runtime.run_lock import RunLock; lock = RunLock(sys.argv[1], 'evaluation')"
            ".acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], cwd=repo_root, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"  # another evaluation writes the folder
        proc = run_main(run_eval_main, "--mode", "validation", "--cfg-path", tmp_path / "eval.yaml", "--output-dir",
                        out)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out}: in use by another evaluation (PID {holder.pid} ")
    assert not (out / "dice.json").exists()


def test_colliding_test_image_names_are_one_line_before_any_work(tiny_ckpt, engine_dir, phantom_root, tmp_path,
                                                                  capsys):
    """ID005/x.png and ID006/x.png would give submission rows that cannot be told apart: refused in one line that
    names both files, before the engine loads, and nothing (not even the output folder) is written."""
    from evaluator.run_eval import main

    data = tmp_path / "data"
    shutil.copytree(phantom_root / "test", data / "test")
    first, *_, last = sorted((data / "test" / "DCM").rglob("*.png"))
    assert first.parent != last.parent
    clash = last.rename(last.with_name(first.name))
    cfg = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out", data_root=data,
                          backend="eager")
    for modes in (["submission"], ["validation", "submission"]):  # with both, before the validation too
        with pytest.raises(SystemExit) as exit_:
            main(["--mode", *modes, "--cfg-path", str(cfg)])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1
        assert err[0].startswith(f"error: {clash}: same file name as {first}: "), err[0]
        assert not (tmp_path / "out").exists()
