"""One sample as the data cache (:mod:`trainer.cache`) stores it, and how a sample list is identified.

:func:`decode_sample` decodes a PNG at the cache's resolution and rasterises its polygons at that size (never a
resized native mask); :func:`data_fingerprint` hashes the list's relative paths, file sizes and mtimes, so an
edited, added or removed file gives a new cache entry (and checkpoints record which data they were trained on).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np

from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.rasterize import rasterize
from handseg.runtime.errors import DataFormatError

CACHE_VERSION = 1  # enters data_fingerprint, so checkpoints compare their data: change only with the data's meaning


class SampleLike(Protocol):
    """What the cache needs of :class:`handseg.data.dataset_index.Sample`."""

    image_path: Path
    label_path: Path | None
    rel: str


def _stat(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        raise DataFormatError(path, "file not found") from None
    return f"{st.st_size}:{st.st_mtime_ns}"


def data_fingerprint(samples: Sequence[SampleLike]) -> str:
    """A 16-hex-digit hash of the sample list: relative paths, sizes and mtimes of every PNG and JSON.

    Any added, removed, renamed, rewritten or touched file changes it. It does not depend on where the data
    root lies, so a copy that preserves mtimes shares the cache.
    """
    h = hashlib.sha256(f"handseg-data-v{CACHE_VERSION}\n".encode())
    for s in samples:
        label = _stat(Path(s.label_path)) if s.label_path is not None else "-"
        h.update(f"{s.rel}\t{_stat(Path(s.image_path))}\t{label}\n".encode())
    return h.hexdigest()[:16]


def resolution_tag(resolution: int | None) -> str:
    """Folder name of one resolution: ``r512`` (square side) or ``native``."""
    return "native" if resolution is None else f"r{int(resolution)}"


def class_boxes(masks: np.ndarray) -> np.ndarray:
    """(C, H, W) {0,1} masks -> (C, 4) int32 boxes (y0, x0, y1, x1), end-exclusive; -1 for an empty class."""
    rows = masks.any(axis=2)  # (C, H)
    cols = masks.any(axis=1)  # (C, W)
    boxes = np.full((masks.shape[0], 4), -1, dtype=np.int32)
    for c in range(masks.shape[0]):
        ys, xs = np.flatnonzero(rows[c]), np.flatnonzero(cols[c])
        if ys.size:
            boxes[c] = (ys[0], xs[0], ys[-1] + 1, xs[-1] + 1)
    return boxes


def decode_sample(
    sample: SampleLike, resolution: int | None, require_all: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode one sample as the cache stores it.

    Returns:
        image (h, w) uint8 (resized to ``resolution`` x ``resolution`` with INTER_AREA, or native) and the
        (29, h, w) uint8 masks rasterised from the polygons at that size (None without an annotation).
    """
    image = read_image(sample.image_path)
    native_hw = image.shape
    out_hw = native_hw if resolution is None else (int(resolution), int(resolution))
    if out_hw != native_hw:
        image = cv2.resize(image, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
    if sample.label_path is None:
        return image, None
    ann = read_annotation(sample.label_path, image_hw=native_hw, require_all=require_all)
    masks = rasterize(polygons_in_order(ann), native_hw, out_hw)
    return image, masks
