"""The one-page HTML report: built from a real validation run's folder, rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluator.config import load_eval_config
from evaluator.efficiency import efficiency_chart
from evaluator.html_parts import png_size
from evaluator.report_html import REPORT_FILE, build_report, write_report
from evaluator.robustness_chart import robustness_chart
from evaluator.run_eval import run
from handseg.format.classes import CLASSES
from handseg.runtime.errors import DataFormatError

from .conftest import write_eval_yaml

CHECK_SCRIPT = """<script>
console.error("handseg-sentinel");
window.addEventListener("load", function () {
  var rows = [];
  document.querySelectorAll("img").forEach(function (img) {
    rows.push({alt: img.alt, ok: img.complete && img.naturalWidth > 0});
  });
  var pre = document.createElement("pre");
  pre.id = "img-check";
  pre.textContent = JSON.stringify(rows);
  document.body.appendChild(pre);
});
</script>"""
BROKEN_IMG = '<img alt="sentinel-broken" src="data:image/png;base64,AAAA">'


def robustness_result(clean: float, checkpoint: str) -> dict:
    rows = []
    for kind, unit, strengths in (("rotation", "deg", [5, 15]), ("noise", "", [5, 20]), ("jpeg", "", [90, 50])):
        rows += [{"kind": kind, "strength": s, "unit": unit, "mean_dice": round(clean - 0.01 * (j + 1), 4),
                  "tolerance": 0.02, "passed": j == 0} for j, s in enumerate(strengths)]
    combined = [{"family": "photometric", "draw": d, "mean_dice": clean - 0.01 * (d + 1), "drop": 0.01 * (d + 1),
                 "worst_drop": 0.03 * (d + 1), "tolerance": 0.015, "passed": d == 0} for d in range(2)]
    return {"unperturbed": {"mean_dice": clean}, "n_images": 4, "perturbations": rows,  # robustness.json's shape
            "combined": {"rows": combined}, "settings": {"checkpoint": checkpoint}}


def efficiency_result(checkpoint: str) -> dict:
    keys = ("tile_ms_p50", "tile_ms_p90", "tile_ms_p99", "batch_ms_p50", "tiles_per_s", "image_ms",
            "images_per_s", "peak_mem_mib", "peak_mem_increase_mib", "max_abs_diff_logits", "mask_dice_min",
            "mask_dice_mean")
    rows = [dict(zip(keys, (13.4, 14.1, 16.8, 13.4, 74.6, 469.0, 2.13, 1724.0, 80.0, 3.4e-05, 1.0, 1.0)),
                 engine="aot_inductor", batch=1),
            dict(zip(keys, (27.6, 28.0, 29.4, 27.6, 36.2, 498.0, 2.01, 1643.0, 70.0, 0.0, 1.0, 1.0)),
                 engine="eager_fp32", batch=1)]
    return {"device": "cpu", "device_name": "x86_64", "torch_threads": 1, "checkpoint": checkpoint, "image_size": 256,
            "warmup": 1, "iters": 2, "image_iters": 1, "memory_method": "peak RSS", "results": rows}


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory, tiny_ckpt, engine_dir, phantom_root) -> Path:
    """A validation run of the tiny checkpoint on the phantom set (eager engine), plus robustness and
    efficiency results as their producers write them."""
    root = tmp_path_factory.mktemp("report")
    out = root / "eval"
    cfg = load_eval_config(write_eval_yaml(root / "eval.yaml", tiny_ckpt, engine_dir, out, data_root=phantom_root,
                                           backend="eager", n_worst_overlays=2))
    summary = run("validation", cfg)["summary"]
    (out / "robustness").mkdir()
    (out / "robustness" / "robustness.json").write_text(json.dumps(robustness_result(summary.mean, str(tiny_ckpt))))
    robustness_chart(robustness_result(summary.mean, str(tiny_ckpt)), out / "robustness" / "robustness.png")
    (out / "efficiency").mkdir()
    (out / "efficiency" / "efficiency.json").write_text(json.dumps(efficiency_result(str(tiny_ckpt))))
    efficiency_chart(efficiency_result(str(tiny_ckpt)), out / "efficiency" / "efficiency.png")
    return out


def chromium() -> str:
    """The Chromium binary; skipped where it is absent, unless HANDSEG_REQUIRE_CHROMIUM makes that a failure."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("HANDSEG_REQUIRE_CHROMIUM"):
            pytest.fail("HANDSEG_REQUIRE_CHROMIUM is set but no chromium is installed")
        pytest.skip("chromium is not installed (set HANDSEG_REQUIRE_CHROMIUM=1 to make this a failure)")
    return path


def run_chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``page`` with a fresh profile, no network services, console logged to stderr."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args,
           page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def console_messages(stderr: str) -> list[str]:
    """The page's console messages from Chromium's log (``INFO:CONSOLE...] "message", source: ...``)."""
    return [m.group(1) for m in re.finditer(r":CONSOLE[^\]]*\] \"(.*)\", source:", stderr)]


def test_report_renders_in_chromium_with_every_image_loaded(eval_dir, tmp_path):
    page = write_report(eval_dir)
    assert page == eval_dir / REPORT_FILE
    text = page.read_text()
    checked = tmp_path / "checked.html"  # the page plus a checker, a known-broken image and a console sentinel
    checked.write_text(text.replace("</body>", BROKEN_IMG + CHECK_SCRIPT + "</body>"))
    proc = run_chromium(tmp_path, checked, "--dump-dom")
    found = re.search(r'<pre id="img-check">(.*?)</pre>', proc.stdout)
    assert found, proc.stdout[-1000:]
    rows = json.loads(found.group(1))
    overlays = sorted((eval_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2
    # dice chart, 2 overlays, robustness chart (robustness.py's PNG), efficiency chart, then the sentinel
    assert len(rows) == 1 + len(overlays) + 1 + 1 + 1
    assert [r["alt"] for r in rows if not r["ok"]] == ["sentinel-broken"]  # the check sees a broken image...
    assert console_messages(proc.stderr) == ["handseg-sentinel"]  # ...and console messages: none but ours


def test_report_screenshot_is_a_page(eval_dir, tmp_path):
    page = write_report(eval_dir)
    shot = tmp_path / "shot.png"
    proc = run_chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert console_messages(proc.stderr) == []
    image = cv2.imread(str(shot))
    assert image.shape == (2400, 1280, 3)
    assert image.std() > 20  # text, tables and pictures, not a blank or error page


def test_report_is_self_contained_and_has_every_section(eval_dir):
    text = build_report(eval_dir)
    for heading in ("Run configuration", "Per-class Dice", "Worst-case overlays", "Robustness", "Efficiency"):
        assert f"<h2>{heading}</h2>" in text
    assert "<script" not in text.lower()
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(?:src|href)=\"(?:https?:)?//|url\(", text)  # nothing fetched from elsewhere
    dice = json.loads((eval_dir / "dice.json").read_text())
    for name in CLASSES:  # every class's Dice, as recorded
        assert re.search(rf"<td>{re.escape(name)}</td><td>[^<]*</td><td class=\"num\">{dice['per_class'][name]:.4f}",
                         text), name
    assert f"{dice['mean_dice']:.4f}" in text
    assert "sentinel" not in text and "true positive" in text and "aot_inductor" in text


def test_optional_parts_missing_leave_one_line_notes(tmp_path, eval_dir):
    out = tmp_path / "eval"
    shutil.copytree(eval_dir, out, ignore=shutil.ignore_patterns("robustness", "efficiency", "overlays"))
    text = build_report(out)
    assert "No robustness result in this folder (robustness/robustness.json)." in text
    assert "No efficiency result in this folder (efficiency/efficiency.json)." in text
    assert "No overlays in this folder" in text
    assert len(re.findall(r"<img ", text)) == 1  # the Dice chart


def test_results_of_another_checkpoint_are_left_out_with_a_note(tmp_path, eval_dir):
    out = tmp_path / "eval"
    shutil.copytree(eval_dir, out)
    (out / "efficiency" / "efficiency.json").write_text(json.dumps(efficiency_result("runs/older/best")))
    text = build_report(out)
    assert "Left out: measured on checkpoint runs/older/best" in text
    assert "<h2>Robustness</h2><p" in text and "robustness chart" in text  # same checkpoint: kept
    assert len(re.findall(r"<img ", text)) == 4  # the efficiency chart is gone
    assert "0.5 for every class" in text and "<th>post-processing</th><td>none</td>" in text
    assert "<th>hand normalisation</th><td>off</td>" in text


def test_candidate_checkpoints_are_listed_with_their_recorded_dice(tmp_path, eval_dir):
    out = tmp_path / "eval"
    shutil.copytree(eval_dir, out)
    dice = json.loads((out / "dice.json").read_text())
    dice["settings"]["checkpoint_candidates"] = [{"checkpoint": "runs/s2/best", "stage": 2, "mean_dice": 0.93794668},
                                     {"checkpoint": "runs/s1/best", "stage": 1, "mean_dice": 0.8823877}]
    (out / "dice.json").write_text(json.dumps(dice))
    text = build_report(out)
    assert ("<th>chosen from</th><td><code>runs/s2/best</code> (stage 2, recorded Dice 0.9379), "
            "<code>runs/s1/best</code> (stage 1, recorded Dice 0.8824)</td>") in text
    assert "{&#x27;checkpoint&#x27;" not in text


def test_hand_normalisation_is_stated(tmp_path, eval_dir):
    out = tmp_path / "eval"
    shutil.copytree(eval_dir, out)
    dice = json.loads((out / "dice.json").read_text())
    dice["settings"]["hand_norm"] = {"reference_fraction": 0.12, "tolerance": 0.1, "reference_angle": 91.5,
                                     "angle_spread": 20.6}
    (out / "dice.json").write_text(json.dumps(dice))
    assert ("size or angle (hand covers 0.120 of the image, axis at 91.5 +- 20.6 degrees) is magnified, shrunk or "
            "rotated") in build_report(out)


def test_bad_inputs_are_one_line_errors(tmp_path, eval_dir):
    with pytest.raises(DataFormatError, match="dice.json: file not found"):
        write_report(tmp_path)
    out = tmp_path / "eval"
    shutil.copytree(eval_dir, out, ignore=shutil.ignore_patterns(REPORT_FILE))
    (out / "robustness" / "robustness.json").write_text(json.dumps({"unperturbed": {"mean_dice": 0.9},
                                                                    "perturbations": [{}]}))
    with pytest.raises(DataFormatError, match=r"robustness.json: perturbations\[0\] must have kind"):
        write_report(out)
    (out / "dice.json").write_text("{")
    with pytest.raises(DataFormatError, match="dice.json: malformed JSON"):
        write_report(out)
    assert not (out / REPORT_FILE).exists()


def test_png_size_reads_the_header():
    ok, data = cv2.imencode(".png", np.zeros((7, 11, 3), np.uint8))
    assert ok and png_size(data.tobytes()) == (11, 7)
    assert png_size(b"GIF89a" + bytes(30)) is None


def test_combined_robustness_rows_are_listed_and_a_missing_chart_is_a_note(tmp_path, eval_dir):
    out = tmp_path / "eval"
    shutil.copytree(eval_dir, out)
    text = build_report(out)
    assert "Combined rows" in text and text.count("<td>photometric</td>") == 2
    assert "<td>yes</td>" in text and "<td><b>no</b></td>" in text  # row 0 within 0.015, row 1 not
    (out / "robustness" / "robustness.png").unlink()
    text = build_report(out)
    assert "No chart in this folder (robustness/robustness.png)." in text and "Combined rows" in text


def test_the_configuration_says_which_tiles_a_cascade_ran_on(eval_dir):
    from evaluator.report_settings import config_section

    assert "<th>tile selection</th><td>not a cascade" in build_report(eval_dir)  # the tiny run is not a cascade
    cascade = {"input": {"mode": "tile", "tile_size": 512, "overlap": 0.25, "prior": {"image_size": 384}}}
    chosen = config_section({"settings": {**cascade, "tile_selection": {"probability": 0.5, "margin": 32}}})
    assert "stage 2 only on tiles within 32 px of where stage 1&#x27;s probability exceeds 0.5" in chosen
    assert "off: stage 2 on every tile" in config_section({"settings": {**cascade, "tile_selection": None}})
    assert "<th>tile selection</th><td>not recorded</td>" in config_section({"settings": cascade})
