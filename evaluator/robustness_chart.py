"""The robustness report's chart (``robustness.png``): one panel per perturbation kind (mean Dice against
strength) and, below them, one panel per family of combined rows (the drop of each row and of its worst image,
against the tolerance)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from evaluator.perturb import IDENTITY, UNITS
from evaluator.report import save_figure

TITLES = {"noise": "Gaussian noise", "blur": "Gaussian blur", "jpeg": "JPEG compression"}  # panel titles
PASS, FAIL, BAND = "#2ca02c", "#d62728", "#4c72b0"


def _kind_panel(ax, kind: str, rows: list[dict], base: float) -> None:
    """Mean Dice against strength for one kind: a dot within tolerance, a red X outside, the unperturbed Dice as
    a dashed line (and as the curve's point at the identity strength) and the allowed drop shaded below it."""
    points = [(r["strength"], r["mean_dice"]) for r in rows]
    if kind in IDENTITY:
        points.append((IDENTITY[kind], base))
        ax.plot(IDENTITY[kind], base, "o", color="k", ms=3.5, zorder=3)
    xs, ys = zip(*sorted(points))
    tol = rows[0]["tolerance"]
    ax.axhspan(base - tol, base, color=BAND, alpha=0.15, lw=0)
    ax.axhline(base, color="k", ls="--", lw=1)
    ax.plot(xs, ys, color=BAND, lw=1.2, zorder=2)
    for r in rows:
        ax.plot(r["strength"], r["mean_dice"], "o" if r["passed"] else "X", ms=6 if r["passed"] else 8,
                zorder=3, color=PASS if r["passed"] else FAIL)
    ax.set_title(f"{TITLES.get(kind, kind)} (tolerance {tol:g})", fontsize=10)
    ax.set_xlabel(UNITS[kind], fontsize=9)
    if kind == "jpeg":  # no identity strength: show the quality scale from 100 down, stronger to the right
        ax.set_xlim(100, max(0.0, min(xs) - 10))


def _combined_panel(ax, family: str, rows: list[dict]) -> None:
    """One family of combined rows: a bar per row (its mean drop; green within tolerance, red outside), a black
    diamond at its worst image's drop, the tolerance as a dashed line."""
    xs = [r["draw"] + 1 for r in rows]
    ax.bar(xs, [r["drop"] for r in rows], width=0.6, color=[PASS if r["passed"] else FAIL for r in rows],
           alpha=0.8, zorder=2)
    ax.plot(xs, [r["worst_drop"] for r in rows], "D", color="k", ms=5, zorder=3)
    tol = rows[0]["tolerance"]
    ax.axhline(tol, color=FAIL, ls="--", lw=1)
    ax.axhline(0.0, color="k", lw=0.8)
    top = max([tol] + [r["worst_drop"] for r in rows] + [r["drop"] for r in rows])
    bottom = min([0.0] + [r["drop"] for r in rows] + [r["worst_drop"] for r in rows])
    ax.set_ylim(bottom - 0.05 * (top - bottom) - 0.001, top * 1.15 + 0.001)
    ax.set_xticks(xs)
    ax.set_xlabel("row (one random combination per image)", fontsize=9)
    ax.set_ylabel("drop of mean Dice", fontsize=9)
    n_pass = sum(r["passed"] for r in rows)
    ax.set_title(f"combined: {family} ({n_pass} of {len(rows)} rows within {tol:g})", fontsize=10)


def robustness_chart(result: dict, path: Path) -> Path:
    """PNG of the report: kind panels share the mean-Dice axis (JPEG quality runs right to left, so every panel
    gets harsher to the right); combined panels, one per family, show drops."""
    rows = result["perturbations"]
    kinds = list(dict.fromkeys(r["kind"] for r in rows))  # config order
    combined = result.get("combined", {}).get("rows") or []
    families = list(dict.fromkeys(r["family"] for r in combined))
    base = result["unperturbed"]["mean_dice"]
    cols = max(min(4, len(kinds)), 2 * len(families))
    kind_rows = -(-len(kinds) // cols)
    fig = Figure(figsize=(3.5 * cols, 2.9 * (kind_rows + (1 if families else 0)) + 0.9), dpi=100)
    grid = fig.add_gridspec(kind_rows + (1 if families else 0), cols)
    first = None
    for n, kind in enumerate(kinds):
        ax = fig.add_subplot(grid[n // cols, n % cols], sharey=first)
        first = first or ax
        _kind_panel(ax, kind, [r for r in rows if r["kind"] == kind], base)
        if n % cols == 0:
            ax.set_ylabel("mean Dice", fontsize=9)
    values = [r["mean_dice"] for r in rows] + [base - max(r["tolerance"] for r in rows), base]
    margin = 0.1 * (max(values) - min(values)) + 0.005
    first.set_ylim(max(0.0, min(values) - margin), min(1.0, max(values) + margin))
    span = cols // max(1, len(families))
    for n, family in enumerate(families):
        ax = fig.add_subplot(grid[kind_rows, n * span:(n + 1) * span])
        _combined_panel(ax, family, [r for r in combined if r["family"] == family])
    for ax in fig.axes:
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, lw=0.5)
    legend = [Line2D([], [], color="k", ls="--", lw=1, marker="o", ms=3.5, label=f"unperturbed ({base:.4f})"),
              Rectangle((0, 0), 1, 1, color=BAND, alpha=0.15, lw=0, label="allowed drop (tolerance)"),
              Line2D([], [], color=PASS, marker="o", ls="", label="within tolerance"),
              Line2D([], [], color=FAIL, marker="X", ls="", ms=8, label="outside tolerance")]
    if families:
        legend += [Patch(color=PASS, alpha=0.8, label="combined row: mean drop"),
                   Line2D([], [], color="k", marker="D", ls="", ms=5, label="its worst image's drop")]
    fig.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=9, frameon=False)
    n_pass = sum(r["passed"] for r in rows) + sum(r["passed"] for r in combined)
    fig.suptitle(f"Mean Dice under perturbation: {result['n_images']} validation image(s), "
                 f"{n_pass} of {len(rows) + len(combined)} rows within tolerance", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return save_figure(fig, path, layout=False)
