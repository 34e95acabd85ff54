"""``phantom.json``: how a data root made by the phantom generator is recognised (model cards mark weights trained
on it as not for clinical use), and the one reader of that file. The generator (:mod:`handseg.phantom`) writes it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

GENERATOR = "handseg.phantom"  # phantom.json's "generator": how a phantom data set is recognised
GENERATOR_VERSION = 1
RECORD_FILE = "phantom.json"


def read_params(root: str | os.PathLike) -> dict | None:
    """``phantom.json`` of a folder, or None where there is none (or it is unreadable)."""
    try:
        return json.loads((Path(root) / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_phantom_data(data_root: str | os.PathLike | None) -> bool | None:
    """True when ``data_root`` holds a phantom data set (its ``phantom.json``), False when it is a readable
    folder without one, None when it cannot be told (no path, or the folder is not here)."""
    if not data_root or not Path(data_root).is_dir():
        return None
    params = read_params(Path(data_root))
    return isinstance(params, dict) and params.get("generator") == GENERATOR
