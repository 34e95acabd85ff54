"""Which checkpoint an evaluation uses: the best of candidates by the validation Dice their training recorded,
refused when they were validated on different images (their Dice could not be compared)."""

from __future__ import annotations

import os
from pathlib import Path

from handseg.model.checkpoint import INFO_FILE, read_info, recorded_data_config
from handseg.runtime.errors import DataFormatError


def _validation_set(info: dict, folder: str | os.PathLike) -> tuple:
    """What a checkpoint's recorded Dice was measured on: data fingerprint, fold, folds, split seed,
    stratification and number of images."""
    data = recorded_data_config(info, folder)
    n_images = (info.get("validation") or {}).get("n_images")
    return (info.get("data_fingerprint"), data.fold, data.n_folds, data.seed, data.stratify, n_images)


def best_checkpoint(folders: list[str | os.PathLike]) -> tuple[Path, list[dict]]:
    """The checkpoint with the highest recorded validation mean Dice among ``folders`` (first wins a tie).

    Returns ``(folder, rows)`` with one row per candidate: ``{"checkpoint", "stage", "mean_dice"}``. Every
    candidate must have been validated on the same images (data fingerprint, fold, number of folds, split seed,
    number of validation images), otherwise their Dice cannot be compared and ValueError names the first that
    differs; an unreadable checkpoint raises DataFormatError.
    """
    if not folders:
        raise ValueError("no checkpoint given")
    rows, reference = [], None
    for folder in folders:
        info = read_info(folder)
        dice = info.get("mean_dice")
        if not isinstance(dice, (int, float)):
            raise DataFormatError(Path(folder) / INFO_FILE, "no recorded validation mean_dice to compare")
        where = _validation_set(info, folder)
        if reference is None:
            reference = where
        elif where != reference:
            raise ValueError(f"{folder} was validated on other images than {folders[0]} (data fingerprint, "
                             f"fold, n_folds, seed, stratify, images: {list(where)} vs {list(reference)}); their "
                             "Dice cannot be compared")
        rows.append({"checkpoint": str(folder), "stage": info.get("stage"), "mean_dice": float(dice)})
    best = max(range(len(rows)), key=lambda i: (rows[i]["mean_dice"], -i))
    return Path(folders[best]), rows
