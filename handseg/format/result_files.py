"""The result files that model cards and report pages read: robustness and efficiency, checked on reading.

**Robustness** (``robustness.json``, written by ``scripts/robustness.py``, see
:func:`evaluator.robustness.summarize_robustness`): mean Dice of the validation images under perturbations of
growing strength, beside the unperturbed mean Dice; the fields read here::

    {"unperturbed": {"mean_dice": 0.893},      # required
     "n_images": 16,                           # optional
     "perturbations": [                        # required: one row per (kind, strength)
        {"kind": "rotation", "strength": 15, "unit": "degrees", "mean_dice": 0.871,   # required
         "tolerance": 0.03, "passed": true}, ...]}                                   # optional

**Efficiency** (``efficiency.json``, written by ``evaluate_efficiency.py``): ``device``, ``device_name``,
``torch_threads``, ``image_size``, ``memory_method`` and ``results``, one row per engine and tile batch with at
least :data:`EFFICIENCY_ROW_KEYS` (see :class:`evaluator.efficiency.Measurement` for every field).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handseg.runtime.errors import DataFormatError

EFFICIENCY_ROW_KEYS = ("engine", "batch", "tile_ms_p50", "image_ms", "images_per_s", "peak_mem_mib")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a missing, unreadable or malformed file -> DataFormatError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


@dataclass
class Robustness:
    """A checked robustness result: ``by_kind[kind]`` = [(strength, mean Dice), ...] by increasing strength,
    kinds in order of first appearance; ``units[kind]`` the strength's unit ("" when not given);
    ``passed[(kind, strength)]`` whether the drop was within the tolerance (where recorded)."""

    clean_mean_dice: float
    n_images: int | None
    by_kind: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    passed: dict[tuple[str, float], bool] = field(default_factory=dict)


def parse_robustness(data: Any, path: str | os.PathLike = "robustness.json") -> Robustness:
    """Check a robustness result (module docstring) and group it by kind; ``path`` names it in errors."""
    if not isinstance(data, dict):
        raise DataFormatError(path, f"robustness result must be a JSON object, got {type(data).__name__}")
    clean = (data.get("unperturbed") or {}).get("mean_dice") if isinstance(data.get("unperturbed"), dict) else None
    if not _number(clean):
        raise DataFormatError(path, f"unperturbed.mean_dice must be a number, got {clean!r:.40}")
    n_images = data.get("n_images")
    if n_images is not None and not (isinstance(n_images, int) and n_images >= 0):
        raise DataFormatError(path, f"n_images must be a non-negative integer, got {n_images!r:.40}")
    rows = data.get("perturbations")
    if not isinstance(rows, list) or not rows:
        raise DataFormatError(path, "perturbations must be a non-empty list of {kind, strength, mean_dice}")
    out = Robustness(float(clean), n_images)
    for i, row in enumerate(rows):
        ok = isinstance(row, dict) and isinstance(row.get("kind"), str) and row["kind"]
        if not (ok and _number(row.get("strength")) and _number(row.get("mean_dice"))):
            raise DataFormatError(path, f"perturbations[{i}] must have kind (text), strength and mean_dice "
                                        f"(numbers), got {row!r:.80}")
        out.by_kind.setdefault(row["kind"], []).append((float(row["strength"]), float(row["mean_dice"])))
        unit = row.get("unit", "")
        out.units.setdefault(row["kind"], unit if isinstance(unit, str) else str(unit))
        if isinstance(row.get("passed"), bool):
            out.passed[(row["kind"], float(row["strength"]))] = row["passed"]
    for kind in out.by_kind:
        out.by_kind[kind].sort()
    return out


def parse_efficiency(data: Any, path: str | os.PathLike = "efficiency.json") -> dict:
    """Check an efficiency result (module docstring); returns it unchanged. ``path`` names it in errors."""
    if not isinstance(data, dict):
        raise DataFormatError(path, f"efficiency result must be a JSON object, got {type(data).__name__}")
    rows = data.get("results")
    if not isinstance(rows, list) or not rows:
        raise DataFormatError(path, "results must be a non-empty list of measurements")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataFormatError(path, f"results[{i}] must be an object, got {type(row).__name__}")
        missing = [k for k in EFFICIENCY_ROW_KEYS if k not in row]
        if missing:
            raise DataFormatError(path, f"results[{i}] lacks {', '.join(missing)}")
        bad = [k for k in EFFICIENCY_ROW_KEYS[1:] if not _number(row[k])]
        if bad:
            raise DataFormatError(path, f"results[{i}].{bad[0]} must be a number, got {row[bad[0]]!r:.40}")
    return data


def describe_strength(strength: float, unit: str) -> str:
    """A strength as people write it: ``10 deg``, ``0.05``, ``1.2x``."""
    text = f"{strength:g}"
    if not unit:
        return text
    return f"{text}{unit}" if unit in ("x", "%") else f"{text} {unit}"
