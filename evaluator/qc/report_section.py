"""The "Flagged for review" section of ``report.html``: what the quality control flagged in the submission run.

Reads ``qc.csv`` (written beside ``submission.csv``) and the flagged images' overlays in ``qc_flagged/``, and,
where ``scripts/qc_report.py`` has run, its measured reliability (``qc_report/qc_report.json``). A missing part
is a one-line note.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from evaluator.html_parts import img_tag
from evaluator.qc.files import FLAGGED_DIR, QC_CSV, flagged_overlay_name, read_qc_csv
from handseg.runtime.errors import DataFormatError

REPORT_JSON = Path("qc_report") / "qc_report.json"
MAX_OVERLAYS = 8


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _reliability(out_dir: Path) -> str:
    """One line with what the QC report measured, or a note that it has not run."""
    path = out_dir / REPORT_JSON
    if not path.is_file():
        return _note(f"How well QC predicts Dice: run <code>scripts/qc_report.py</code> "
                     f"(no {_e(REPORT_JSON.as_posix())}).")
    try:
        s = json.loads(path.read_text())["summary"]
        return (f"<p>Measured by <code>scripts/qc_report.py</code> on {s['n_labelled']} labelled images (test split "
                f"and perturbed copies): Spearman {s['spearman']:.2f} between predicted and true Dice; flagged "
                f"{100 * s['flagged_low']:.0f}% of images with true Dice &lt; 0.90 and {100 * s['flagged_high']:.0f}% "
                f"of those &ge; 0.93; the failure cases flagged in {100 * s['failure_flag_rate']:.0f}% of their "
                "images.</p>")
    except (OSError, ValueError, KeyError, TypeError):
        raise DataFormatError(path, "not a QC report (expected a summary with spearman, flagged_low, ...)") from None


def flagged_section(out_dir: str | Path) -> str:
    """The section's HTML for the evaluation folder ``out_dir``."""
    out_dir = Path(out_dir)
    head = '<section id="flagged"><h2>Flagged for review</h2>'
    if not (out_dir / QC_CSV).is_file():
        return head + _note(f"No quality control in this folder ({QC_CSV}, written by the submission run).") + \
            "</section>"
    rows = read_qc_csv(out_dir / QC_CSV)
    flagged = [r for r in rows if r["flag"]]
    intro = (f"<p>Quality control without labels flagged <b>{len(flagged)} of {len(rows)}</b> submission images: "
             "an anatomy no hand has (a bone missing, out of order or out of place, Radius and Ulna swapped, "
             "an upside-down hand) or a predicted Dice below the threshold fitted on validation.</p>")
    parts = [head, intro, _reliability(out_dir)]
    if flagged:
        body = "".join(
            f"<tr><td><code>{_e(r['image'])}</code></td><td class=\"num\">"
            f"{'' if r['predicted_dice'] is None else format(r['predicted_dice'], '.3f')}</td>"
            f"<td>{_e(r['reason'])}</td></tr>" for r in flagged)
        parts.append('<table><tr><th>image</th><th class="num">predicted Dice</th><th>reason</th></tr>'
                     f"{body}</table>")
    shown = 0
    for r in flagged:
        path = out_dir / FLAGGED_DIR / flagged_overlay_name(r["image"])
        if path.is_file() and shown < MAX_OVERLAYS:
            caption = f"<code>{_e(r['image'])}</code>: {_e(r['reason'])}"
            parts.append(f"<figure>{img_tag(path.read_bytes(), 'flagged ' + r['image'])}"
                         f"<figcaption>{caption}</figcaption></figure>")
            shown += 1
    if len(flagged) > shown:
        parts.append(_note(f"{len(flagged) - shown} more flagged image(s) without an overlay here "
                           f"({FLAGGED_DIR}/ holds what the submission run wrote)."))
    return "".join(parts) + "</section>"
