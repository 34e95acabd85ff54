"""Contact sheets: images with their annotation outlines drawn in one colour per class."""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from handseg.data.image_io import read_image, write_png
from handseg.format.annotations import read_annotation
from handseg.format.classes import CLASSES


def class_colours() -> list[tuple[int, int, int]]:
    """29 well-separated BGR colours (golden-ratio hues), in CLASSES order."""
    colours = []
    for i in range(len(CLASSES)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0 if i % 2 == 0 else 0.8)
        colours.append((int(b * 255), int(g * 255), int(r * 255)))
    return colours


def draw_outlines(
    image: np.ndarray,
    polygons: Mapping[str, np.ndarray],
    tile: int,
    caption: str | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """(H, W) uint8 image and label -> (N, 2) polygons (image pixels) -> (tile, tile, 3) uint8 BGR overlay.

    Non-square images are fitted into the tile keeping their aspect ratio. Without ``antialias`` the
    outlines use only the pure class colours (for palette PNGs).
    """
    line = cv2.LINE_AA if antialias else cv2.LINE_8
    h, w = image.shape[:2]
    f = tile / max(h, w)
    small = cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((tile, tile, 3), np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    colours = class_colours()
    for label, pts in polygons.items():
        if label not in CLASSES or len(pts) < 3:
            continue
        scaled = np.rint(((np.asarray(pts, np.float64) + 0.5) * f - 0.5) * 16).astype(np.int32)
        cv2.polylines(canvas, [scaled.reshape(-1, 1, 2)], True, colours[CLASSES.index(label)], 1, line, shift=4)
    if caption:
        scale = max(0.3, tile / 1100)
        cv2.putText(canvas, caption, (6, tile - 8), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, line)
    return canvas


def contact_sheet(tiles: Sequence[np.ndarray], cols: int = 3, gap: int = 4) -> np.ndarray:
    """Arrange equal (t, t, 3) uint8 tiles in a grid with ``gap`` px of black between them."""
    if not tiles:
        raise ValueError("no tiles to arrange")
    t = tiles[0].shape[0]
    cols = min(cols, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.zeros((rows * t + (rows - 1) * gap, cols * t + (cols - 1) * gap, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (t + gap) : r * (t + gap) + t, c * (t + gap) : c * (t + gap) + t] = tile
    return sheet


def write_preview(
    pairs: Sequence[tuple[Path, Path]], out: Path, tile: int = 512, cols: int = 3, captions: bool = True
) -> Path:
    """Contact sheet of (png, json) pairs with outlines, written atomically to ``out`` (PNG)."""
    tiles = []
    for png, js in pairs:
        image = read_image(png)
        ann = read_annotation(js, image_hw=image.shape[:2], require_all=False)  # failure cases lack some
        caption = f"{png.parent.name}/{png.name}" if captions else None
        tiles.append(draw_outlines(image, ann.polygons, tile, caption))
    return write_png(out, contact_sheet(tiles, cols), compression=9)
