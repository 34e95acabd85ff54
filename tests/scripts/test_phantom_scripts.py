"""make_phantom.py, eda.py, score_submission.py and resolution_ceiling.py, run as a user runs them (their ``main`` in
this process: exit code, stdout and stderr as the command gives them)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.rasterize import rasterize
from handseg.format.rle import rle_encode_many
from handseg.format.submission import write_submission
from tests.commands import load_script, run_main


def run(script: str, *args: str | Path) -> subprocess.CompletedProcess:
    return run_main(load_script(script.removesuffix(".py")).main, *args)


def test_make_phantom_writes_reuses_and_refuses(tmp_path: Path):
    out = tmp_path / "phantom"
    args = ("--out", out, "--train-ids", "2", "--test-ids", "1", "--size", "128", "--seed", "3", "--preview",
            "--workers", "1")  # in this process (two workers: test_phantom's byte-identity test)
    first = run("make_phantom.py", *args)
    assert first.returncode == 0, first.stderr
    assert len(list((out / "train" / "DCM").glob("ID*/*.png"))) == 4
    assert len(list((out / "test_labels" / "outputs_json").glob("ID*/*.json"))) == 2
    preview = read_image(out / "preview.png")
    assert preview.shape[0] >= 128 and preview.shape[1] >= 3 * 128
    assert read_image(out / "preview_test.png").shape[1] >= 2 * 128  # the test split's two images
    assert json.loads((out / "phantom.json").read_text())["complete"] is True
    stamp = (out / "train" / "DCM").stat().st_mtime_ns, sorted(p.name for p in out.rglob("*.png"))

    (out / "preview_test.png").unlink()  # a data set reused without its test preview gets one
    again = run("make_phantom.py", *args)
    assert again.returncode == 0 and "reusing" in again.stdout and (out / "preview_test.png").is_file()
    assert ((out / "train" / "DCM").stat().st_mtime_ns, sorted(p.name for p in out.rglob("*.png"))) == stamp

    other = run("make_phantom.py", "--out", out, "--train-ids", "1", "--test-ids", "1", "--size", "128", "--quiet")
    assert other.returncode == 0 and "regenerating" in other.stdout
    assert len(list((out / "train" / "DCM").glob("ID*/*.png"))) == 2

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = run("make_phantom.py", "--out", foreign, "--train-ids", "1", "--test-ids", "0", "--size", "128")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error:") and len(refused.stderr.strip().splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine" and not (foreign / "train").exists()

    no_workers = run("make_phantom.py", "--out", tmp_path / "w", "--train-ids", "1", "--test-ids", "0",
                     "--workers", "0")
    assert no_workers.returncode == 2 and "--workers: must be >= 1" in no_workers.stderr
    assert not (tmp_path / "w").exists()
    no_workers = run("make_failure_cases.py", "--out", tmp_path / "f", "--workers", "0")
    assert no_workers.returncode == 2 and "--workers: must be >= 1" in no_workers.stderr
    assert not (tmp_path / "f").exists()


def test_eda_writes_chart_overlays_and_summary(phantom_root: Path, tmp_path: Path):
    out = tmp_path / "eda"
    res = run("eda.py", "--data", phantom_root, "--out", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert "train: 8 images, 4 IDs" in res.stdout and "test:  4 images, 2 IDs" in res.stdout
    chart, overlays = read_image(out / "class_area.png"), read_image(out / "overlays.png")
    assert chart.shape[1] > 500 and overlays.shape == (512, 4 * 512 + 3 * 4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_images"] == 8 and len(summary["mean_area_px2"]) == 29
    assert len((out / "class_area.csv").read_text().splitlines()) == 30


def test_eda_reports_a_missing_data_root(tmp_path: Path):
    res = run("eda.py", "--data", tmp_path / "nowhere", "--out", tmp_path / "eda")
    assert res.returncode == 2 and res.stderr.startswith("error:")


def _submission(root: Path, path: Path, empty: bool = False, drop_last: bool = False) -> Path:
    rles = {}
    for js in sorted((root / "test_labels" / "outputs_json").rglob("*.json")):
        ann = read_annotation(js)
        masks = rasterize(polygons_in_order(ann), ann.hw)
        rles[ann.filename] = [""] * 29 if empty else rle_encode_many(masks)
    write_submission(path, rles, root / "sample_submission.csv")
    if drop_last:
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[:-1]) + "\n")
    return path


@pytest.mark.parametrize("kind", ["perfect", "empty"])
def test_score_submission_scores_like_the_leaderboard(phantom_root: Path, tmp_path: Path, kind: str):
    csv_path = _submission(phantom_root, tmp_path / f"{kind}.csv", empty=kind == "empty")
    res = run("score_submission.py", "--csv", csv_path, "--labels", phantom_root / "test_labels",
              "--out", tmp_path / "score.json")
    assert res.returncode == 0, res.stderr
    score = json.loads((tmp_path / "score.json").read_text())
    assert score["n_images"] == 4 and len(score["per_class"]) == 29
    if kind == "perfect":
        assert score["mean"] == pytest.approx(1.0) and "mean Dice 1.0000" in res.stdout
    else:
        assert score["mean"] < 0.01


def test_score_submission_refuses_missing_rows(phantom_root: Path, tmp_path: Path):
    csv_path = _submission(phantom_root, tmp_path / "short.csv", drop_last=True)
    res = run("score_submission.py", "--csv", csv_path, "--labels", phantom_root / "test_labels")
    assert res.returncode == 2 and "missing" in res.stderr


def test_resolution_ceiling_is_perfect_at_native_size_and_lower_on_a_coarse_grid(phantom_root: Path):
    done = run("resolution_ceiling.py", "--data", phantom_root, "--n-folds", "2", "--sizes", "16", "64", "256")
    assert done.returncode == 0, done.stderr
    rows = {int(line.split("|")[1]): float(line.split("|")[2]) for line in done.stdout.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert rows[256] == 1.0  # the phantom is 256 px: no round trip loss
    assert rows[16] < rows[64] < 1.0
    missing = run("resolution_ceiling.py", "--data", phantom_root / "nope")
    assert missing.returncode != 0
