"""QC end to end on the tiny checkpoint and the 256 px phantom set: the model fitted on the validation fold and
found beside the thresholds file, qc.csv and attributes.qc from predict.py, qc.csv and flagged overlays from
the submission run, the report page's section, and the QC report script."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from evaluator.config import load_eval_config
from evaluator.predict import load_predictor, predict_paths
from evaluator.qc.files import COLUMNS, FLAGGED_DIR, flagged_overlay_name
from evaluator.qc.model import load_qc_model
from evaluator.qc.report_section import flagged_section
from evaluator.run_eval import run
from handseg.format.classes import CLASSES
from handseg.phantom.failure_set import generate_failure_cases
from tests.evaluator.conftest import write_eval_yaml


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[3] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fit_qc, qc_report = _script("fit_qc"), _script("qc_report")


@pytest.fixture(scope="module")
def qc_cfg(tmp_path_factory, tiny_ckpt, engine_dir, phantom_root):
    root = tmp_path_factory.mktemp("qc_eval")
    thresholds = root / "eval" / "thresholds.yaml"
    thresholds.parent.mkdir()
    thresholds.write_text(yaml.safe_dump({"thresholds": {c: 0.5 for c in CLASSES}}))
    path = write_eval_yaml(root / "eval.yaml", tiny_ckpt, engine_dir, root / "eval", data_root=phantom_root,
                           backend="eager", thresholds=str(thresholds))
    assert fit_qc.main(["--cfg-path", str(path), "--copies", "1", "--quiet"]) == 0
    return path


def test_fit_writes_the_model_beside_the_thresholds(qc_cfg):
    model = load_qc_model(qc_cfg.parent / "eval" / "qc_model.json")
    assert model.fit["n_images"] == 8  # 4 validation images, each also perturbed once (--copies 1)
    assert model.reference is not None and model.reference.n_images == 4
    assert "uncertain" in model.dice.features and (model.dice.weights >= 0).all()
    assert 0.9 <= model.dice.flag_below <= 0.93


def test_predict_writes_qc_csv_and_per_bone_attributes(qc_cfg, phantom_root, tmp_path):
    predictor = load_predictor(load_eval_config(qc_cfg), echo=False)
    result = predict_paths(predictor, phantom_root / "test" / "DCM", tmp_path / "p", progress=False)
    rows = list(csv.DictReader(result.qc_csv.open()))
    assert result.qc_csv == tmp_path / "p" / "qc.csv" and tuple(rows[0]) == COLUMNS
    assert [r["image"] for r in rows] == sorted(f"{rel}.png" for rel in result.written)
    for row in rows:
        assert 0.0 <= float(row["predicted_dice"]) <= 1.0
        assert row["flag"] in ("0", "1") and (row["flag"] == "1") == bool(row["reason"])
        qc = json.loads((tmp_path / "p" / row["image"]).with_suffix(".json").read_text())["attributes"]["qc"]
        assert qc["reason"] == row["reason"] and qc["predicted_dice"] == pytest.approx(float(row["predicted_dice"]),
                                                                                      abs=1e-4)
        assert list(qc["bones"]) == list(CLASSES)
        assert set(qc["bones"]["Radius"]) >= {"predicted_dice", "present", "n_pieces", "uncertain", "position"}
    assert result.flagged == [r["image"] for r in rows if r["flag"] == "1"]


def test_without_a_model_qc_flags_from_the_anatomy_only(tiny_ckpt, engine_dir, phantom_root, tmp_path, capsys):
    path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "eval", data_root=phantom_root,
                           backend="eager")
    predictor = load_predictor(load_eval_config(path), echo=True)
    assert "qc: thresholds given as numbers" in capsys.readouterr().err
    result = predict_paths(predictor, phantom_root / "test" / "DCM", tmp_path / "p", progress=False)
    rows = list(csv.DictReader(result.qc_csv.open()))
    assert rows and all(r["predicted_dice"] == "" for r in rows)
    off = load_predictor(load_eval_config(path), echo=False, qc=False)
    assert predict_paths(off, phantom_root / "test" / "DCM", tmp_path / "q", progress=False).qc_csv is None
    assert not (tmp_path / "q" / "qc.csv").exists()


def test_submission_writes_qc_and_the_report_shows_the_flagged(qc_cfg):
    cfg = load_eval_config(qc_cfg)
    run("validation", cfg)
    out = run("submission", cfg)
    rows = list(csv.DictReader(out["qc"].open()))
    assert out["qc"] == out["csv"].with_name("qc.csv") and len(rows) == 4
    flagged = [r for r in rows if r["flag"] == "1"]
    assert flagged  # a random tiny model misses bones
    for r in flagged:
        assert (cfg.output_dir / FLAGGED_DIR / flagged_overlay_name(r["image"])).is_file()
    page = out["report"].read_text()
    assert '<section id="flagged"><h2>Flagged for review</h2>' in page
    assert f"<b>{len(flagged)} of 4</b>" in page and page.count('alt="flagged ') == len(flagged)
    assert flagged[0]["reason"].split(";")[0].replace("'", "&#x27;") in page


def test_report_with_flagged_overlays_renders_in_chromium(qc_cfg, tmp_path):
    from tests.evaluator.test_report_html import CHECK_SCRIPT, console_messages, run_chromium

    cfg = load_eval_config(qc_cfg)
    if not (cfg.output_dir / "qc.csv").is_file():
        run("validation", cfg)
        run("submission", cfg)
    checked = tmp_path / "checked.html"
    checked.write_text((cfg.output_dir / "report.html").read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    proc = run_chromium(tmp_path, checked, "--dump-dom")
    rows = json.loads(re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout).group(1))
    flagged = [r for r in rows if r["alt"].startswith("flagged ")]
    assert flagged and all(r["ok"] for r in rows)
    assert console_messages(proc.stderr) == ["handseg-sentinel"]  # the checker's own message, nothing else


def test_report_section_without_qc_is_a_note(tmp_path):
    assert "No quality control in this folder" in flagged_section(tmp_path)


def test_qc_report_script_writes_table_json_and_chart(qc_cfg, tmp_path, capsys):
    generate_failure_cases(tmp_path / "failures", ["cut_fingers", "blank"], persons=1, size=256, seed=1)
    code = qc_report.main(["--cfg-path", str(qc_cfg), "--failures", str(tmp_path / "failures"), "--per-image", "1",
                           "--cost-images", "1", "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| Spearman, predicted vs true Dice | test + perturbed | 8 |" in table
    assert "| failure case: fingers cut by the frame | cut_fingers | 2 |" in table
    data = json.loads((tmp_path / "out" / "qc_report" / "qc_report.json").read_text())
    assert {r["set"] for r in data["images"]} == {"test", "perturbed", "harsh", "cut_fingers", "blank"}
    assert data["summary"]["with_harsh"]["n_labelled"] == 12 and "| test + perturbed + harsh | 12 |" in table
    assert data["summary"]["cases"]["blank"]["flag_rate"] == 1.0  # nothing but flags on an image without a hand
    assert data["summary"]["cost"]["images"] == 1
    assert (tmp_path / "out" / "qc_report" / "qc_report.png").stat().st_size > 10_000
    # Two worker processes share the images: the same record for every image (the cost is timed in this process).
    code = qc_report.main(["--cfg-path", str(qc_cfg), "--failures", str(tmp_path / "failures"), "--per-image", "1",
                           "--cost-images", "1", "--output-dir", str(tmp_path / "two"), "--quiet", "--workers", "2"])
    shared = json.loads((tmp_path / "two" / "qc_report" / "qc_report.json").read_text())
    assert code == 0 and shared["images"] == data["images"] and len(data["images"]) == 16
