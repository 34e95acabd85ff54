"""Tiny synthetic data sets in the competition layout, and a toy hand with a toy model that finds its carpal and
finger bones, for tests that must not wait for the phantom or a trained model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from handseg.data.image_io import write_png
from handseg.format.annotations import ImageAnnotation, write_annotation
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.inference.hand_norm import CARPAL_CLASSES, FINGER_CLASSES, warp_image


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


def two_level_logits(x: torch.Tensor) -> torch.Tensor:
    """Toy logits: grey pixels (0.35-0.75 of white) are carpal bones, brighter ones finger bones (4x pooled)."""
    v = F.avg_pool2d(x[:, :1] * 0.229 + 0.485, 4)
    logits = torch.full((x.shape[0], NUM_CLASSES, *v.shape[-2:]), -1.0)
    logits[:, list(CARPAL_CLASSES)] = torch.where((v > 0.35) & (v < 0.75), 1.0, -1.0)
    logits[:, list(FINGER_CLASSES)] = torch.where(v >= 0.75, 1.0, -1.0)
    return logits


def pointing_hand(degrees: float, side: int = 512) -> np.ndarray:
    """A grey palm (carpals) with a white bar (fingers) above it, turned ``degrees`` counter-clockwise."""
    img = np.zeros((side, side), np.uint8)
    cv2.rectangle(img, (156, 270), (356, 400), 140, -1)
    cv2.rectangle(img, (196, 90), (316, 270), 255, -1)
    return warp_image(img, cv2.getRotationMatrix2D(((side - 1) / 2, (side - 1) / 2), degrees, 1.0))
