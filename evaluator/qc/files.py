"""What QC writes: ``qc.csv`` (one row per image) and the per-bone detail in the annotation JSON's attributes.

``qc.csv``: ``image,predicted_dice,flag,reason``: the image's path (relative to the input folder, as the other
outputs name it), its predicted mean Dice (4 decimals; empty without a QC model), ``1`` when it is flagged for
review and ``0`` otherwise, and the reason in words (empty when not flagged). The annotation JSON of a
prediction gets ``attributes.qc``: the same three values, the findings with the bones each names, the hand's
axis, and per bone its predicted Dice and signals (:func:`qc_attributes`).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from evaluator.qc.assess import QCResult
from evaluator.qc.signals import FEATURES
from handseg.format.classes import CLASSES
from handseg.runtime.atomic import atomic_write_bytes
from handseg.runtime.errors import DataFormatError

QC_CSV = "qc.csv"
FLAGGED_DIR = "qc_flagged"  # the overlays of the images flagged by the submission run
COLUMNS = ("image", "predicted_dice", "flag", "reason")


def _num(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), digits)


def qc_row(image: str, result: QCResult) -> list[str]:
    """One ``qc.csv`` row."""
    dice = "" if result.predicted_dice is None else f"{result.predicted_dice:.4f}"
    return [image, dice, "1" if result.flag else "0", result.reason]


def write_qc_csv(path: str | Path, rows: Sequence[Sequence[str]]) -> Path:
    """Write ``qc.csv`` (header :data:`COLUMNS`, then ``rows`` from :func:`qc_row`), atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return atomic_write_bytes(Path(path), buf.getvalue().encode())


def read_qc_csv(path: str | Path) -> list[dict]:
    """The rows of a ``qc.csv`` as dicts (``predicted_dice`` a float or None, ``flag`` a bool)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise DataFormatError(path, f"expected the columns {','.join(COLUMNS)}")
            rows = list(reader)
    except OSError as exc:
        raise DataFormatError(path, f"cannot read ({exc.strerror or exc})") from None
    return [{"image": r["image"], "predicted_dice": float(r["predicted_dice"]) if r["predicted_dice"] else None,
             "flag": r["flag"] == "1", "reason": r["reason"]} for r in rows]


def qc_attributes(result: QCResult) -> dict:
    """``attributes.qc`` of the annotation JSON: predicted Dice, flag, reason, findings (text, bones, hard),
    the hand axis (degrees, 90 = fingers up) and, per bone: predicted Dice, present, number of pieces, area
    relative to training's typical, and each signal of :data:`evaluator.qc.signals.FEATURES` (null where not
    computed)."""
    s = result.signals
    bones = {}
    for c, name in enumerate(CLASSES):
        entry = {"predicted_dice": None if result.bone_dice is None else _num(result.bone_dice[c]),
                 "present": bool(s.present[c]), "n_pieces": int(s.n_pieces[c]),
                 "area_ratio": _num(s.area_ratio[c], 3)}
        entry.update({f: _num(s.features[c, k]) for k, f in enumerate(FEATURES)})
        bones[name] = entry
    return {"predicted_dice": _num(result.predicted_dice), "flag": result.flag, "reason": result.reason,
            "findings": [{"text": f.text, "bones": list(f.bones), "hard": f.hard} for f in result.findings],
            "hand_axis_degrees": _num(s.angle, 1), "bones": bones}


def flagged_overlay_name(image: str) -> str:
    """The file name of a flagged image's overlay under ``qc_flagged/``: its relative path with ``/`` -> ``__``."""
    return image.replace("\\", "/").replace("/", "__").rsplit(".", 1)[0] + ".png"


def rows_flagged(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["flag"]]

