"""Tiny synthetic data sets in the competition layout, for tests that must not wait for the phantom."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handseg.annotations import ImageAnnotation, write_annotation
from handseg.classes import CLASSES
from handseg.image_io import write_png


def blob(cx: float, cy: float, rx: float, ry: float, n: int = 24, phase: float = 0.0) -> np.ndarray:
    """A smooth closed outline as (n, 2) int32 (x, y) vertices."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + phase
    wobble = 1 + 0.1 * np.sin(3 * t)
    pts = np.stack([cx + rx * wobble * np.cos(t), cy + ry * wobble * np.sin(t)], axis=1)
    return np.rint(pts).astype(np.int32)


def class_polygons(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """29 overlapping blobs inside a size x size image, one per class, in CLASSES order."""
    rng = np.random.default_rng(seed)
    polys = {}
    for name in CLASSES:
        r = rng.uniform(0.06, 0.2, 2) * size
        cx, cy = rng.uniform(r.max() + 1, size - r.max() - 2, 2)
        polys[name] = np.clip(blob(cx, cy, r[0], r[1], phase=rng.uniform(0, 6)), 0, size - 1)
    return polys


def write_sample(root: Path, split: str, pid: str, stem: str, size: int = 32, seed: int = 0, label: bool = True):
    """Write one PNG (and, for train with ``label``, its JSON) under ``root``; returns (png, json | None)."""
    rng = np.random.default_rng(seed)
    png = root / split / "DCM" / pid / f"{stem}.png"
    write_png(png, rng.integers(0, 256, (size, size), dtype=np.uint8))
    if split != "train" or not label:
        return png, None
    js = root / split / "outputs_json" / pid / f"{stem}.json"
    write_annotation(js, ImageAnnotation(f"{stem}.png", size, size, class_polygons(size, seed)))
    return png, js


def make_dataset(root: Path, train_ids: int = 3, test_ids: int = 1, size: int = 32, meta: bool = True) -> Path:
    """A complete tiny data root: ``IDnnn`` folders with a right and a left hand each, plus meta_data.csv."""
    seed = 0
    rows = ["ID,age,sex,weight,height"]
    for i in range(1, train_ids + test_ids + 1):
        pid = f"ID{i:03d}"
        split = "train" if i <= train_ids else "test"
        for side in ("R", "L"):
            write_sample(root, split, pid, f"image{1660000000000 + seed:013d}_{side}", size, seed)
            seed += 1
        rows.append(f"{pid},{20 + i},{'M' if i % 2 else 'F'},{60 + i},{170 + i}")
    if meta:
        (root / "meta_data.csv").write_text("\n".join(rows) + "\n")
    return root
