"""The QC report's files: the table the README shows (``qc_report.md``), the JSON with every image
(``qc_report.json``) and the chart (``qc_report.png``: predicted against true Dice with the flag threshold, and
the failure cases' flag rates)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from evaluator.qc.evaluation import HIGH, LOW, QCRecord, result_json
from evaluator.report import save_figure
from handseg.phantom.failures import CASES
from handseg.runtime.atomic import atomic_write_text

TARGETS = {"spearman": 0.7, "flagged_low": 0.9, "flagged_high": 0.1, "worst_named": 0.7, "case": 0.9, "cost": 0.05}


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f}%"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _check(value: float | None, target: float, above: bool = True) -> bool | None:
    if value is None or math.isnan(value):
        return None
    return value >= target if above else value <= target


def _measure_rows(m: dict, where: str) -> list[tuple]:
    t = TARGETS
    return [("Spearman, predicted vs true Dice", where, m["n_labelled"], ">= 0.70", f"{m['spearman']:.2f}",
             _check(m["spearman"], t["spearman"])),
            ("flagged, true Dice < 0.90", where, m["n_low"], ">= 90%", _pct(m["flagged_low"]),
             _check(m["flagged_low"], t["flagged_low"])),
            ("flagged, true Dice >= 0.93", where, m["n_high"], "<= 10%", _pct(m["flagged_high"]),
             _check(m["flagged_high"], t["flagged_high"], above=False)),
            ("reason names the worst bone", f"flagged of {where}", m["n_flagged"], ">= 70%", _pct(m["worst_named"]),
             _check(m["worst_named"], t["worst_named"]))]


def format_qc_table(summary: dict) -> str:
    """Markdown: one row per target of the issue, with the images it was measured on and whether it is met."""
    s = summary
    rows = _measure_rows(s, "test + perturbed")
    if s.get("with_harsh"):
        rows += _measure_rows(s["with_harsh"], "test + perturbed + harsh")
    for case, c in s["cases"].items():
        rows.append((f"failure case: {CASES.get(case, case)}", case, c["images"], ">= 90%",
                     f"{_pct(c['flag_rate'])} ({_pct(c['names_case_bones'])} naming its bones)",
                     _check(min(c["flag_rate"], c["names_case_bones"]), TARGETS["case"])))
    cost = s.get("cost")
    if cost:
        rows.append(("QC cost per image: its own work in the inference with QC", "test", cost["images"], "<= 5%",
                     f"{100 * cost['own_share']:.1f}% ({cost['own_ms']:.0f} of {cost['ms_with']:.0f} ms)",
                     _check(cost["own_share"], TARGETS["cost"], above=False)))
        rows.append(("QC cost per image: inference without and with QC, wall clock", "test", cost["images"],
                     "<= 5%", f"{100 * cost['added']:+.1f}% ({cost['ms_without']:.0f} -> {cost['ms_with']:.0f} ms)",
                     _check(cost["added"], TARGETS["cost"], above=False)))
    lines = ["| measure | images from | images | target | measured | met |",
             "| --- | --- | ---: | ---: | ---: | :---: |"]
    lines += [f"| {a} | {b} | {n} | {target} | {value} | {_met(ok)} |" for a, b, n, target, value, ok in rows]
    sets = ", ".join(f"{k} {v['mean_true_dice']:.4f} ({v['images']})" for k, v in s["sets"].items() if v["images"])
    lines += ["", f"Reasons name the worst bone in {_pct(s.get('worst_named_all'))} of all flagged images, failure "
                  f"cases included. Mean true Dice (images): {sets}."]
    return "\n".join(lines)


COLOURS = {"test": "#4c72b0", "perturbed": "#dd8452", "harsh": "#222222", "cut_fingers": "#ccb974",
           "cast": "#da8bc3", "plate": "#c44e52", "child": "#8c8c8c", "upside_down": "#8172b3",
           "mirrored": "#64b5cd", "blank": "#937860", "non_hand": "#55a868"}


def _scatter(ax, records: Sequence[QCRecord], flag_below: float | None) -> list[Line2D]:
    """Predicted against true Dice of ``records`` (flagged filled, the others hollow), the flag threshold and the
    0.90 and 0.93 lines; returns the legend's handles."""
    handles = []
    for name in dict.fromkeys(r.set for r in records):
        colour = COLOURS.get(name, "#999999")
        for flagged in (True, False):
            pts = [(r.true_dice, r.predicted_dice) for r in records if r.set == name and r.flag == flagged
                   and r.predicted_dice is not None]
            if pts:
                x, y = zip(*pts)
                ax.scatter(x, y, s=26, facecolors=colour if flagged else "none", edgecolors=colour, linewidths=1.0,
                           zorder=3)
        handles.append(Line2D([], [], marker="o", ls="", color=colour, label=name))
    if flag_below is not None:
        ax.axhline(flag_below, color="k", ls="--", lw=1)
    for v in (LOW, HIGH):
        ax.axvline(v, color="#888888", ls=":", lw=1)
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, zorder=1)
    ax.set_xlabel("true Dice (mean over 29 bones)")
    ax.set_ylabel("predicted Dice")
    ax.grid(alpha=0.3, lw=0.5)
    return handles + [Line2D([], [], marker="o", ls="", markerfacecolor="none", color="k", label="not flagged"),
                      Line2D([], [], color="k", ls="--", label=f"flag below {flag_below}")]


def qc_chart(records: Sequence[QCRecord], summary: dict, flag_below: float | None, path: Path) -> Path:
    """Three panels: predicted against true Dice of every image; the same for the test split and its perturbed
    and harsher copies, around the flag threshold; each failure case's flag rate."""
    fig = Figure(figsize=(17, 6.0), dpi=100)
    every, near, bars = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.25, 1.25, 1]})
    every.legend(handles=_scatter(every, records, flag_below), fontsize=8, loc="upper center",
                 bbox_to_anchor=(0.5, -0.13), ncol=4)
    every.set_title("Every image", fontsize=10)
    labelled = [r for r in records if r.set in ("test", "perturbed", "harsh")]
    _scatter(near, labelled, flag_below)
    near.set_xlim(0.80, 0.97)
    near.set_ylim(0.80, 0.97)
    harsh = summary.get("with_harsh") or summary
    near.set_title(f"Test split, perturbed and harsher copies: Spearman {summary['spearman']:.2f} "
                   f"({harsh['spearman']:.2f} with the harsher)", fontsize=10)
    cases = summary["cases"]
    names = list(cases)
    if names:
        y = np.arange(len(names))
        bars.barh(y, [cases[n]["flag_rate"] for n in names], color="#c44e52", alpha=0.8, label="flagged")
        bars.barh(y, [cases[n]["names_case_bones"] for n in names], height=0.35, color="#4c72b0",
                  label="reason names its bones")
        bars.set_yticks(y, [CASES.get(n, n) for n in names], fontsize=8)
        bars.axvline(TARGETS["case"], color="k", ls="--", lw=1)
        bars.set_xlim(0, 1.05)
        bars.invert_yaxis()
        bars.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    bars.set_title("Failure cases: share of their images", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, layout=False)


def write_qc_report(out: Path, records: Sequence[QCRecord], summary: dict, settings: dict) -> dict[str, Path]:
    """Write qc_report.json, qc_report.md and qc_report.png under ``out``; returns their paths."""
    header = (f"# Quality control\n\ncheckpoint `{settings.get('checkpoint')}`, QC model "
              f"`{settings.get('qc_model')}` (flag below {settings.get('flag_below')})\n\n")
    return {"json": atomic_write_text(out / "qc_report.json", result_json(records, summary, settings)),
            "markdown": atomic_write_text(out / "qc_report.md", header + format_qc_table(summary) + "\n"),
            "chart": qc_chart(records, summary, settings.get("flag_below"), out / "qc_report.png")}
