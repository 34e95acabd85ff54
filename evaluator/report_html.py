"""One self-contained HTML page per evaluation: ``<out_dir>/report.html``.

Built from what the evaluator leaves in its output folder (only ``dice.json`` is required):

    dice.json, dice.png                 validation Dice (evaluator.report.write_validation_report)
    overlays/*.png                      worst-case overlays, ``<rank>_<image stem>_dice<mean>.png``
    robustness/robustness.json, .png    optional (shape: handseg.format.result_files)
    efficiency/efficiency.json, .png    optional (evaluate_efficiency.py)
    qc.csv, qc_flagged/*.png            optional (the submission run's quality control; evaluator.qc)

Sections: run configuration (:mod:`evaluator.report_settings`), per-class Dice (table and chart), worst-case
overlays with their legend, images flagged for review (:mod:`evaluator.qc.report_section`), robustness (chart,
single-kind and combined rows) and efficiency (table and chart) (:mod:`evaluator.report_results`). Images are
embedded as base64 data URIs and the style is inline: the page needs no network, no other file and no
JavaScript, so it can be mailed or archived as it is. A missing optional part is left out with a
one-line note.
"""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path

import numpy as np

from evaluator.html_parts import esc, figure, note
from evaluator.overlays import class_key
from evaluator.qc.report_section import flagged_section
from evaluator.report import FN_RGB, FP_RGB, TP_RGB
from evaluator.report_results import efficiency_section, robustness_section
from evaluator.report_settings import config_section
from handseg.format.classes import CLASSES, describe_bone
from handseg.format.result_files import read_json
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import DataFormatError

REPORT_FILE = "report.html"
_OVERLAY_NAME = re.compile(r"^(\d+)_(.+)_dice(\d+(?:\.\d+)?)\.png$")
N_LOWEST = 3

STYLE = """
:root { --ink: #1d2329; --muted: #5d6670; --line: #d9dde2; --card: #ffffff; --bg: #f3f4f6; --low: #fdecea;
        --accent: #2b5d9b; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
header { margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 14px 0 6px; }
.sub { color: var(--muted); margin: 0; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 18px 22px;
          margin: 16px 0; }
.headline { display: flex; flex-wrap: wrap; gap: 14px; margin-top: 14px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px;
        min-width: 170px; }
.stat b { display: block; font-size: 24px; font-variant-numeric: tabular-nums; }
.stat span { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 14px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; }
tr.low td { background: var(--low); }
tr.total td { font-weight: 700; border-top: 2px solid var(--ink); }
table.kv th { background: none; color: var(--muted); font-weight: 500; width: 190px; }
.tables { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 12px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.legend { display: flex; flex-wrap: wrap; gap: 18px; margin: 6px 0 10px; font-size: 14px; }
.swatch { display: inline-block; width: 14px; height: 14px; border: 1px solid #888; vertical-align: -2px;
          margin-right: 6px; }
.note { color: var(--muted); font-style: italic; margin: 4px 0; }
code { font-size: 13px; background: #eef1f4; padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 12px; margin-top: 20px; }
@media print { body { background: #fff; } section { break-inside: avoid; border: none; padding: 0; } }
"""


def _swatch(rgb: tuple[int, int, int]) -> str:
    return f'<span class="swatch" style="background: rgb{tuple(rgb)}"></span>'


def read_dice(out_dir: Path) -> dict:
    """``dice.json`` of an evaluation folder, checked: per-class Dice for the 29 classes and the mean."""
    path = out_dir / "dice.json"
    data = read_json(path)
    per_class = data.get("per_class") if isinstance(data, dict) else None
    if not isinstance(per_class, dict) or [c for c in CLASSES if not isinstance(per_class.get(c), (int, float))]:
        raise DataFormatError(path, "expected per_class Dice for the 29 classes (evaluator validation output)")
    if not isinstance(data.get("mean_dice"), (int, float)):
        raise DataFormatError(path, "expected a numeric mean_dice")
    return data


def _per_image(dice: dict) -> tuple[list[str], np.ndarray] | None:
    rows = dice.get("per_image")
    if not isinstance(rows, dict) or not rows:
        return None
    try:
        values = np.asarray(list(rows.values()), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if values.ndim != 2 or values.shape[1] != len(CLASSES):
        return None
    return list(rows), values


def _class_table(names: list[str], dice: dict, lowest: set[str], worst: dict[str, tuple[float, str]],
                 total: bool = False) -> str:
    head = ('<tr><th class="num">#</th><th>class</th><th>bone</th><th class="num">Dice</th>'
            + ('<th class="num">worst image</th>' if worst else "") + "</tr>")
    body = []
    for name in names:
        cls = ' class="low"' if name in lowest else ""
        w = worst.get(name)
        extra = (f'<td class="num" title="{esc(w[1])}">{w[0]:.4f}</td>' if w else "")
        body.append(f'<tr{cls}><td class="num">{CLASSES.index(name) + 1}</td><td>{esc(name)}</td>'
                    f'<td>{esc(describe_bone(name))}</td><td class="num">{dice["per_class"][name]:.4f}</td>'
                    f'{extra}</tr>')
    if total:
        body.append(f'<tr class="total"><td></td><td colspan="2">mean of 29 classes</td>'
                    f'<td class="num">{dice["mean_dice"]:.4f}</td>' + ("<td></td>" if worst else "") + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _dice_section(out_dir: Path, dice: dict) -> str:
    per_class = dice["per_class"]
    lowest = sorted(CLASSES, key=lambda c: per_class[c])[:N_LOWEST]
    worst: dict[str, tuple[float, str]] = {}
    images = _per_image(dice)
    if images is not None:
        names, values = images
        for c, name in enumerate(CLASSES):
            i = int(np.argmin(values[:, c]))
            worst[name] = (float(values[i, c]), names[i])
    fingers = [c for c in CLASSES if c.startswith("finger-")]
    others = [c for c in CLASSES if not c.startswith("finger-")]
    chart = out_dir / "dice.png"
    parts = ["<section id=\"dice\"><h2>Per-class Dice</h2>",
             f"<p>Mean Dice <b>{dice['mean_dice']:.4f}</b> over the 29 classes and {dice.get('n_images', '?')} "
             "validation images: Dice per image and class, "
             "(2&thinsp;|<i>P</i> &#8745; <i>G</i>| + 10<sup>&minus;4</sup>) / "
             "(|<i>P</i>| + |<i>G</i>| + 10<sup>&minus;4</sup>) for prediction <i>P</i> and labels <i>G</i>, at "
             "the original resolution, mean over images per class, then over classes. The "
             f"{N_LOWEST} lowest classes are shaded"
             + ("; <i>worst image</i> is the class's Dice on the image where it is lowest (hover for its name)"
                if worst else "")
             + ".</p>"]
    if chart.is_file():
        parts.append(figure(chart.read_bytes(), "bar chart of Dice per class",
                             "Dice per class, the dashed line is the mean."))
    else:
        parts.append(note("No chart (dice.png) in this folder."))
    parts.append('<div class="tables"><div><h3>Finger bones (numbered from the thumb, tip to wrist)</h3>'
                 + _class_table(fingers, dice, set(lowest), worst) + "</div><div><h3>Carpals and forearm</h3>"
                 + _class_table(others, dice, set(lowest), worst, total=True) + "</div></div></section>")
    return "".join(parts)


def _overlay_caption(path: Path, dice: dict) -> str:
    match = _OVERLAY_NAME.match(path.name)
    if not match:
        return esc(path.name)
    rank, stem, mean = int(match.group(1)), match.group(2), float(match.group(3))
    text = f"<b>{rank + 1}.</b> <code>{esc(stem)}</code>: mean Dice {mean:.4f}"
    images = _per_image(dice)
    if images is not None:
        names, values = images
        hits = [i for i, n in enumerate(names) if Path(n).stem == stem]
        if hits:
            row = values[hits[0]]
            low = np.argsort(row, kind="stable")[:N_LOWEST]
            text += "; lowest: " + ", ".join(f"{esc(CLASSES[c])} {row[c]:.3f}" for c in low)
    return text


def _overlays_section(out_dir: Path, dice: dict) -> str:
    files = sorted((out_dir / "overlays").glob("*.png")) if (out_dir / "overlays").is_dir() else []
    head = "<section id=\"overlays\"><h2>Worst-case overlays</h2>"
    if not files:
        return head + note("No overlays in this folder (overlays/*.png).") + "</section>"
    keys = ", ".join(f"{class_key(c)} {c}" for c in CLASSES if not c.startswith("finger-"))
    legend = ('<div class="legend">'
              f"<span>{_swatch(TP_RGB)}true positive</span><span>{_swatch(FP_RGB)}false positive (extra bone)</span>"
              f"<span>{_swatch(FN_RGB)}false negative (missed bone)</span></div>")
    images = f"{len(files)} validation image" + ("s" if len(files) != 1 else "")
    intro = (f"<p>The {images} with the lowest mean Dice, prediction against the labels, "
             "any bone. A pixel wrong for any class shows as false negative before false positive. Each bone "
             f"predicted or labelled carries its key: 1-19 the finger bones, {esc(keys)}; the panel beside each "
             "picture lists them.</p>")
    figures = "".join(figure(p.read_bytes(), f"overlay {p.name}", _overlay_caption(p, dice)) for p in files)
    return head + intro + legend + figures + "</section>"


def build_report(out_dir: str | os.PathLike, title: str | None = None) -> str:
    """The HTML text of the report of the evaluation folder ``out_dir`` (see the module docstring).

    Raises DataFormatError when ``dice.json`` is missing or malformed, or an optional result is malformed.
    """
    out_dir = Path(out_dir)
    dice = read_dice(out_dir)
    run = f"{out_dir.resolve().parent.name}/{out_dir.resolve().name}"
    title = title or f"Validation report: {run}"
    per_class = dice["per_class"]
    low = min(CLASSES, key=lambda c: per_class[c])
    headline = (
        '<div class="headline">'
        f'<div class="stat"><b>{dice["mean_dice"]:.4f}</b><span>mean Dice, 29 classes</span></div>'
        f'<div class="stat"><b>{esc(dice.get("n_images", "?"))}</b><span>validation images</span></div>'
        f'<div class="stat"><b>{per_class[low]:.4f}</b><span>lowest class: {esc(low)}</span></div></div>'
    )
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
        f"<header><h1>{esc(title)}</h1><p class=\"sub\">Hand-bone X-ray segmentation, 29 classes, evaluation "
        f"folder <code>{esc(run)}</code>.</p>{headline}</header>"
        + config_section(dice) + _dice_section(out_dir, dice) + _overlays_section(out_dir, dice)
        + flagged_section(out_dir) + robustness_section(out_dir, dice) + efficiency_section(out_dir, dice)
        + f"<footer>Written by handseg on {generated} from the files of the evaluation folder.</footer>"
        "</main></body></html>\n"
    )


def write_report(out_dir: str | os.PathLike, title: str | None = None, path: str | os.PathLike | None = None) -> Path:
    """Write :func:`build_report` of ``out_dir`` to ``path`` (default ``<out_dir>/report.html``) atomically."""
    return atomic_write_text(Path(path) if path else Path(out_dir) / REPORT_FILE, build_report(out_dir, title))


def refresh_report(out_dir: str | os.PathLike) -> Path | None:
    """Rewrite ``<out_dir>/report.html`` when the folder holds a validation result (``dice.json``), so the page
    includes what a later step (robustness, efficiency) added; None when there is nothing to report yet."""
    return write_report(out_dir) if (Path(out_dir) / "dice.json").is_file() else None


def print_written(paths: dict, out_dir: str | os.PathLike) -> None:
    """After a step that adds to the evaluation folder ``out_dir``: refresh its ``report.html``, then print every
    file the step wrote (``paths``: name -> path or None) and the report, one ``name: path`` line each."""
    paths = {**paths, "report": refresh_report(out_dir)}
    for key, path in paths.items():
        if path is not None:
            print(f"{key}: {path}")
