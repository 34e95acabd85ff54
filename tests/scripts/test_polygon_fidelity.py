"""scripts/polygon_fidelity.py: predict.py's JSONs read back against its saved masks, worst class Dice, exit status."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from handseg.data.dataset_index import index_split
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.classes import CLASSES
from handseg.format.polygons import write_prediction_annotation
from handseg.format.rasterize import rasterize

_SPEC = importlib.util.spec_from_file_location(
    "polygon_fidelity", Path(__file__).resolve().parents[2] / "scripts" / "polygon_fidelity.py")
polygon_fidelity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(polygon_fidelity)


def write_like_predict(folder: Path, name: str, masks: np.ndarray) -> None:
    """``<name>.json`` and ``<name>.masks.npz`` as ``predict.py --masks npz`` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    write_prediction_annotation(folder / f"{name}.json", masks, filename=f"{name}.png")
    buf = io.BytesIO()
    np.savez_compressed(buf, masks=masks, classes=np.array(CLASSES))
    (folder / f"{name}.masks.npz").write_bytes(buf.getvalue())


def test_worst_class_dice_and_exit_status(phantom_root, tmp_path, capsys):
    out = tmp_path / "predict"
    for i, sample in enumerate(index_split(phantom_root, "train")[:2]):
        ann = read_annotation(sample.label_path)
        masks = rasterize(polygons_in_order(ann), ann.hw).astype(bool)
        masks[CLASSES.index("Pisiform")] = False  # a class predicted empty: no polygon, not counted
        write_like_predict(out / f"ID{i}", Path(sample.name).stem, masks)
    assert polygon_fidelity.main([str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["class", "images", "worst", "mean", "worst", "image"]
    assert printed[1 + CLASSES.index("Pisiform")].split() == ["Pisiform", "0", "-", "-"]
    worst = float(printed[-1].split(": ")[1].split()[0])
    assert printed[-1].startswith("worst class Dice over 2 image(s): ") and 0.995 <= worst < 1.0
    assert polygon_fidelity.main([str(out), "--target", "1.0"]) == 1

    js = sorted(out.rglob("*.json"))[0]  # a reader that loses a polygon is caught: that class scores 0
    data = json.loads(js.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["label"] != "Trapezoid"]
    js.write_text(json.dumps(data))
    assert polygon_fidelity.main([str(out)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("worst class Dice over 2 image(s): 0.0000 (Trapezoid)")


def test_a_folder_without_masks_is_one_line(tmp_path, capsys):
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(SystemExit):
        polygon_fidelity.main([str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path}: no <stem>.json with a <stem>.masks.npz")
