"""The report's sections on results that later steps add to an evaluation folder: robustness (chart, single-kind
and combined rows) and efficiency (table and chart); each is left out with a one-line note when its file is missing
or was measured on another checkpoint than the validation's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluator.efficiency import COLUMNS as EFFICIENCY_COLUMNS
from evaluator.html_parts import esc, figure, note
from handseg.format.result_files import describe_strength, parse_efficiency, parse_robustness, read_json

ROBUSTNESS_JSON = Path("robustness") / "robustness.json"
ROBUSTNESS_PNG = Path("robustness") / "robustness.png"
EFFICIENCY_JSON = Path("efficiency") / "efficiency.json"
EFFICIENCY_PNG = Path("efficiency") / "efficiency.png"


def other_checkpoint(dice: dict, recorded: Any) -> str | None:
    """A note when a result was measured on another checkpoint than the validation's (then it is left out)."""
    ours = (dice.get("settings") or {}).get("checkpoint")
    if not isinstance(ours, str) or not isinstance(recorded, str) or Path(ours).resolve() == Path(recorded).resolve():
        return None
    return f"Left out: measured on checkpoint {recorded}, not on {ours} (the one validated here); run it again."


def robustness_section(out_dir: Path, dice: dict) -> str:
    """The robustness section of the evaluation folder ``out_dir`` whose validation result is ``dice``."""
    head = "<section id=\"robustness\"><h2>Robustness</h2>"
    path = out_dir / ROBUSTNESS_JSON
    if not path.is_file():
        return head + note(f"No robustness result in this folder ({ROBUSTNESS_JSON.as_posix()}).") + "</section>"
    data = read_json(path)
    stale = other_checkpoint(dice, (data.get("settings") or {}).get("checkpoint") if isinstance(data, dict) else None)
    if stale:
        return head + note(stale) + "</section>"
    rob = parse_robustness(data, path)
    combined = (data.get("combined") or {}).get("rows") or []
    chart = out_dir / ROBUSTNESS_PNG
    n = f" of the {rob.n_images} validation images" if rob.n_images is not None else ""
    intro = (f"<p>Mean Dice{n} under perturbations of growing strength; unperturbed "
             f"<b>{rob.clean_mean_dice:.4f}</b> (dashed line).</p>")
    body = []
    for kind, points in rob.by_kind.items():
        for j, (strength, value) in enumerate(points):
            first = f'<td rowspan="{len(points)}">{esc(kind.replace("_", " "))}</td>' if j == 0 else ""
            body.append(f'<tr>{first}<td class="num">{esc(describe_strength(strength, rob.units[kind]))}</td>'
                        f'<td class="num">{value:.4f}</td>'
                        f'<td class="num">{value - rob.clean_mean_dice:+.4f}</td></tr>')
    table = ('<table><tr><th>perturbation</th><th class="num">strength</th><th class="num">mean Dice</th>'
             f'<th class="num">change</th></tr>{"".join(body)}</table>')
    shown = (figure(chart.read_bytes(), "robustness chart", "Mean Dice against perturbation strength, one panel per "
                    "kind; the combined rows' drops against their tolerance.")
             if chart.is_file() else note(f"No chart in this folder ({ROBUSTNESS_PNG.as_posix()})."))
    return head + intro + shown + table + _combined_table(combined) + "</section>"


def _combined_table(rows: list) -> str:
    """The combined rows (every photometric kind at once, alone or with the geometric kinds): mean Dice, mean drop,
    the worst image's drop and whether the mean drop is within tolerance."""
    if not rows:
        return ""
    body = "".join(
        f'<tr><td>{esc(r.get("family"))}</td><td class="num">{esc(int(r.get("draw", 0)) + 1)}</td>'
        f'<td class="num">{r["mean_dice"]:.4f}</td><td class="num">{r["drop"]:+.4f}</td>'
        f'<td class="num">{r["worst_drop"]:+.4f}</td><td class="num">{r["tolerance"]}</td>'
        f'<td>{"yes" if r.get("passed") else "<b>no</b>"}</td></tr>'
        for r in rows if isinstance(r, dict))
    return ("<p>Combined rows: one random combination of every photometric kind per image (and with rotation, zoom "
            "and translation); drop = unperturbed minus perturbed mean Dice.</p>"
            '<table><tr><th>combined</th><th class="num">row</th><th class="num">mean Dice</th>'
            '<th class="num">drop</th><th class="num">worst image\'s drop</th><th class="num">tolerance</th>'
            f"<th>within</th></tr>{body}</table>")


def efficiency_section(out_dir: Path, dice: dict) -> str:
    """The efficiency section of the evaluation folder ``out_dir`` whose validation result is ``dice``."""
    head = "<section id=\"efficiency\"><h2>Efficiency</h2>"
    path = out_dir / EFFICIENCY_JSON
    if not path.is_file():
        return head + note(f"No efficiency result in this folder ({EFFICIENCY_JSON.as_posix()}).") + "</section>"
    eff = parse_efficiency(read_json(path), path)
    stale = other_checkpoint(dice, eff.get("checkpoint"))
    if stale:
        return head + note(stale) + "</section>"
    cols = [(k, title, fmt) for k, title, fmt in EFFICIENCY_COLUMNS if all(k in r for r in eff["results"])]
    head_row = "".join(f'<th class="{"num" if k != "engine" else ""}">{esc(t)}</th>' for k, t, _ in cols)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if k != "engine" else ""}">{esc(fmt.format(r[k]))}</td>'
                         for k, _, fmt in cols) + "</tr>"
        for r in eff["results"])
    size = eff.get("image_size", "?")
    intro = (f"<p>Measured by <code>evaluate_efficiency.py</code> on {esc(eff.get('device', '?'))} "
             f"({esc(eff.get('device_name', '?'))}, {esc(eff.get('torch_threads', '?'))} threads). Tile times are per "
             f"model input; image time is one {esc(size)}x{esc(size)} image including tiling, blending, thresholds "
             f"and RLE; memory: {esc(eff.get('memory_method', 'not recorded'))}; |diff| and mask Dice are against "
             "eager fp32.</p>")
    parts = [head, intro, f"<table>{head_row and '<tr>' + head_row + '</tr>'}{body}</table>"]
    chart = out_dir / EFFICIENCY_PNG
    if chart.is_file():
        parts.append(figure(chart.read_bytes(), "efficiency chart", "Whole-image latency and peak memory per "
                                                                     "engine and tile batch."))
    return "".join(parts) + "</section>"
