"""scripts/dataset_summary.py end to end (its ``main`` in this process, as the command runs it): a good data root,
and bad ones answered in one line."""

from __future__ import annotations

import json
import shutil
import subprocess

from tests.commands import load_script, run_main
from tests.handseg.synthetic import make_dataset


def run(*args: str) -> subprocess.CompletedProcess:
    return run_main(load_script("dataset_summary").main, *args)


def make_phantom(*args: str) -> subprocess.CompletedProcess:
    return run_main(load_script("make_phantom").main, *args, "--workers", "1")


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_summary_of_a_good_root(tmp_path):
    root = make_dataset(tmp_path / "data", train_ids=4, test_ids=2, size=24)
    out = tmp_path / "runs" / "folds.json"
    proc = run("--data", str(root), "--folds", "2", "--seed", "3", "--save", str(out), "--stratify", "sex")
    assert proc.returncode == 0, proc.stderr
    assert "train: 4 person(s), 8 image(s)" in proc.stdout
    assert "test:  2 person(s), 4 image(s)" in proc.stdout
    assert "validation problems: 0" in proc.stdout
    assert "fold 0: 2 person(s), 4 image(s)" in proc.stdout and "fold 1:" in proc.stdout
    folds = json.loads(out.read_text())["folds"]
    assert sorted(folds) == ["ID001", "ID002", "ID003", "ID004"] and sorted(folds.values()) == [0, 0, 1, 1]


def test_missing_and_empty_roots(tmp_path):
    assert_one_line_error(run("--data", str(tmp_path / "nope")), "nope", "data root not found")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("--data", str(tmp_path / "empty")), "empty", "train/DCM")


def test_unpaired_png(tmp_path):
    root = make_dataset(tmp_path / "data", train_ids=2, test_ids=0, size=16)
    next((root / "train" / "outputs_json").rglob("*.json")).unlink()
    assert_one_line_error(run("--data", str(root), "--folds", "2"), "1 PNG(s) without annotation JSON")


def test_malformed_files_are_listed_then_one_line_error(tmp_path):
    root = make_dataset(tmp_path / "data", train_ids=2, test_ids=0, size=16)
    bad_json = sorted((root / "train" / "outputs_json").rglob("*.json"))[0]
    bad_json.write_text('{"annotations": [{"label": "finger-1", "points": [[1, 2]')
    bad_png = sorted((root / "train" / "DCM").rglob("*.png"))[-1]
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    proc = run("--data", str(root), "--folds", "2", "--decode")
    assert "validation problems: 2" in proc.stdout
    assert f"{bad_json}: malformed JSON" in proc.stdout and str(bad_png) in proc.stdout
    assert_one_line_error(proc, "2 file(s) failed validation")


def test_too_many_folds(tmp_path):
    root = make_dataset(tmp_path / "data", train_ids=2, test_ids=0, size=16)
    assert_one_line_error(run("--data", str(root), "--folds", "5"), "--folds", "cannot fill 5 folds")


def test_phantom_root(phantom_root):
    proc = run("--data", str(phantom_root), "--folds", "2")
    assert proc.returncode == 0, proc.stderr
    assert "train: 4 person(s), 8 image(s)" in proc.stdout and "validation problems: 0" in proc.stdout


def test_korean_meta_data_xlsx_stratifies_as_the_english_csv(tmp_path):
    """The competition's meta_data.xlsx (Korean headers, sex 남 / 여) as make_phantom.py --meta xlsx-ko writes it:
    --stratify sex works, the mapping is shown, and the folds are those of the English CSV, each fold getting one
    man and one woman (5 of each in 5 folds)."""
    ko, en = tmp_path / "ko", tmp_path / "en"
    args = ("--train-ids", "10", "--test-ids", "0", "--size", "64", "--seed", "2", "--quiet")
    made = make_phantom("--out", str(ko), *args, "--meta", "xlsx-ko")
    assert made.returncode == 0, made.stderr
    assert (ko / "meta_data.xlsx").is_file() and not (ko / "meta_data.csv").exists()
    shutil.copytree(ko, en)
    again = make_phantom("--out", str(en), *args)  # reused, only the table is rewritten in the English form
    assert "reusing" in again.stdout and "meta data rewritten" in again.stdout, again.stdout + again.stderr
    assert (en / "meta_data.csv").is_file() and not (en / "meta_data.xlsx").exists()
    stdout = {}
    for root in (ko, en):
        proc = run("--data", str(root), "--folds", "5", "--stratify", "sex")
        assert proc.returncode == 0, proc.stderr
        stdout[root] = proc.stdout
    assert "  columns: 나이 -> age, 성별 -> sex, 체중(몸무게) -> weight, 키(신장) -> height" in stdout[ko]
    assert "  sex values: 남 -> M, 여 -> F (F: 5, M: 5)" in stdout[ko]
    folds = {root: [ln for ln in out.splitlines() if ln.startswith("fold ")] for root, out in stdout.items()}
    assert folds[ko] == folds[en] and len(folds[ko]) == 5
    assert all(ln.endswith("[sex=F: 1, sex=M: 1]") for ln in folds[ko]), folds[ko]
