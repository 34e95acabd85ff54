"""Legends and class labels for overlay pictures, and the overlay of a prediction alone (no ground truth).

Every bone drawn gets a short key at an inner point of its largest part (``1`` ... ``19`` for the finger bones,
which is their number; ``Tm``, ``Td``, ``Ca``, ``Ha``, ``Sc``, ``Lu``, ``Tq``, ``Pi`` for the carpals; ``Ra``,
``Ul`` for the forearm), and a panel on the right explains the colours and lists the keys with the class
names. All pictures are (h, w, 3) uint8 RGB; text is drawn with OpenCV's Hershey font at a fixed pixel size,
so it stays readable whatever the image size (the panel grows the canvas where the image is too small).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.phantom.preview import class_colours

OVERLAY_MAX_SIDE = 768
PANEL_WIDTH = 236
ROW_HEIGHT = 20
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
LABEL_SCALE = 0.42
PANEL_RGB = (28, 30, 34)
TEXT_RGB = (235, 235, 235)
MUTED_RGB = (120, 124, 130)
_SHORT = {"Trapezium": "Tm", "Trapezoid": "Td", "Capitate": "Ca", "Hamate": "Ha", "Scaphoid": "Sc",
          "Lunate": "Lu", "Triquetrum": "Tq", "Pisiform": "Pi", "Radius": "Ra", "Ulna": "Ul"}
CLASS_RGB: tuple[tuple[int, int, int], ...] = tuple((r, g, b) for b, g, r in class_colours())


def class_key(name: str) -> str:
    """The short key drawn on a bone: the number of a finger bone, a two-letter abbreviation otherwise."""
    return name.split("-", 1)[1] if name.startswith("finger-") else _SHORT[name]


@dataclass(frozen=True)
class LegendRow:
    """One legend line: a colour swatch (None: no swatch), an optional short ``key`` in its own column, and
    text; ``heading`` rows are set apart, ``muted`` rows greyed out."""

    text: str
    rgb: tuple[int, int, int] | None = None
    muted: bool = False
    heading: bool = False
    key: str | None = None


def display_size(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(h, w) of a picture of an ``hw`` image whose longer side is at most ``max_side`` (never enlarged)."""
    scale = min(1.0, max_side / max(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def shrink(array: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Area-resize an (H, W) or (H, W, 3) array to ``hw``; float input gives fractional coverage."""
    if array.shape[:2] == tuple(hw):
        return array
    return cv2.resize(array, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def content_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1) half-open bounding box of the nonzero pixels of an (h, w) mask, or None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def label_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the pixel deepest inside the largest 8-connected part of an (h, w) bool mask, or None.
    Only the mask's bounding box is searched (everything outside it is background anyway)."""
    box = content_box(mask)
    if box is None:
        return None
    y0, x0, y1, x1 = box
    m = mask[y0:y1, x0:x1].astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    part = np.pad((labels == k).astype(np.uint8), 1)  # padding: the image border counts as outside
    depth = cv2.distanceTransform(part, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(x) + x0, int(y) + y0


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, rgb, outline: bool = False) -> None:
    if outline:
        cv2.putText(img, text, org, FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, tuple(int(v) for v in rgb), 1, cv2.LINE_AA)


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes)


def draw_class_keys(rgb: np.ndarray, masks: np.ndarray) -> list[int]:
    """Write each class's key into ``rgb`` in place (white on a black outline), centred on its
    :func:`label_point`, or moved by one key size where that would cover a key already written; a key with no
    free place near its bone is left out. ``masks``: (29, h, w) bool at ``rgb``'s size. Returns the indices of
    the classes present in ``masks`` (with or without a key)."""
    present, boxes = [], []
    h, w = rgb.shape[:2]
    for c, name in enumerate(CLASSES):
        point = label_point(masks[c])
        if point is None:
            continue
        present.append(c)
        key = class_key(name)
        (tw, th), _ = cv2.getTextSize(key, FONT, LABEL_SCALE, 1)
        steps = [(0, 0), (0, th + 3), (0, -th - 3), (tw + 3, 0), (-tw - 3, 0),
                 (tw + 3, th + 3), (-tw - 3, th + 3), (tw + 3, -th - 3), (-tw - 3, -th - 3)]
        for dx, dy in steps:
            x = int(np.clip(point[0] + dx - tw // 2, 1, w - tw - 1))
            y = int(np.clip(point[1] + dy + th // 2, th + 1, h - 2))
            box = (x - 1, y - th - 1, x + tw + 1, y + 3)
            if not _overlaps(box, boxes):
                _text(rgb, key, (x, y), LABEL_SCALE, (255, 255, 255), outline=True)
                boxes.append(box)
                break
    return present


def legend_panel(rows: list[LegendRow], height: int, width: int = PANEL_WIDTH) -> np.ndarray:
    """An (max(height, needed), width, 3) uint8 panel listing ``rows`` top to bottom."""
    needed = 12 + sum(ROW_HEIGHT + (6 if r.heading else 0) for r in rows) + 8
    panel = np.empty((max(height, needed), width, 3), np.uint8)
    panel[:] = PANEL_RGB
    y = 12
    for row in rows:
        y += 6 if row.heading else 0
        x = 12
        if row.rgb is not None:
            cv2.rectangle(panel, (x, y + 3), (x + 13, y + 16), tuple(int(v) for v in row.rgb), -1)
            cv2.rectangle(panel, (x, y + 3), (x + 13, y + 16), (200, 200, 200), 1)
            x += 22
        colour = MUTED_RGB if row.muted else TEXT_RGB
        if row.key is not None:
            (kw, _), _ = cv2.getTextSize(row.key, FONT, FONT_SCALE, 1)
            _text(panel, row.key, (x + 20 - kw, y + 15), FONT_SCALE, colour)  # keys right-aligned in a column
            x += 30
        _text(panel, row.text, (x, y + 15), FONT_SCALE + (0.03 if row.heading else 0.0), colour)
        y += ROW_HEIGHT
    return panel


def with_legend(rgb: np.ndarray, rows: list[LegendRow]) -> np.ndarray:
    """``rgb`` (h, w, 3) with a legend panel on its right; the canvas is made taller (panel colour below the
    picture) when the legend needs more height than the picture has."""
    panel = legend_panel(rows, rgb.shape[0])
    canvas = np.empty((panel.shape[0], rgb.shape[1] + panel.shape[1], 3), np.uint8)
    canvas[:] = PANEL_RGB
    canvas[: rgb.shape[0], : rgb.shape[1]] = rgb
    canvas[:, rgb.shape[1]:] = panel
    return canvas


def class_rows(present: list[int], heading: str, swatches: bool, all_classes: bool = False) -> list[LegendRow]:
    """Legend rows ``key  name`` for the classes in ``present`` (or all 29, the absent ones muted)."""
    rows = [LegendRow(heading, heading=True)]
    for c, name in enumerate(CLASSES):
        if c in present or all_classes:
            absent = c not in present
            rows.append(LegendRow(name + ("  (none)" if absent else ""), CLASS_RGB[c] if swatches else None,
                                  muted=absent, key=class_key(name)))
    return rows


def box_coverage(masks: ClassMasks, hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) float32 fraction of every display pixel each class covers, shrinking only each class's box
    (its pixels placed to within half a display pixel); equals shrinking the dense masks where no box is cut."""
    h, w = hw
    sy, sx = h / masks.height, w / masks.width
    cover = np.zeros((len(masks), h, w), np.float32)
    for c, (box, mask) in enumerate(zip(masks.boxes, masks.masks)):
        if box is None:
            continue
        y0, x0 = int(box[0] * sy), int(box[1] * sx)
        y1, x1 = max(y0 + 1, min(h, round(box[2] * sy))), max(x0 + 1, min(w, round(box[3] * sx)))
        cover[c, y0:y1, x0:x1] = shrink(mask.cpu().numpy().astype(np.float32), (y1 - y0, x1 - x0))
    return cover


def prediction_overlay(image: np.ndarray, pred: "np.ndarray | ClassMasks", max_side: int = OVERLAY_MAX_SIDE
                       ) -> np.ndarray:
    """The X-ray with each predicted bone tinted and outlined in its own colour, its key on it, and a legend
    of all 29 classes (those not found muted). For new X-rays, where there is no ground truth.

    Args:
        image: (H, W) uint8 grayscale X-ray.
        pred: (29, H, W) bool or {0, 1} predicted masks (overlapping bones blend their colours), or the same
            as :class:`~handseg.format.class_masks.ClassMasks` (only each class's box is resized: much faster).
        max_side: the picture's longer side before the legend (never enlarged).
    Returns:
        (h, w + panel, 3) uint8 RGB.
    """
    hw = display_size(image.shape[:2], max_side)
    gray = shrink(image, hw).astype(np.float32)
    if isinstance(pred, ClassMasks):
        cover = box_coverage(pred, hw)
    else:
        cover = np.stack([shrink(p.astype(np.float32), hw) for p in np.asarray(pred)])  # (29, h, w) in [0, 1]
    colours = np.asarray(CLASS_RGB, np.float32)
    weight = cover.sum(axis=0)
    mixed = np.ascontiguousarray(np.moveaxis((colours.T @ cover.reshape(len(cover), -1)).reshape(3, *hw), 0, -1))
    mixed /= np.maximum(weight, 1e-6)[..., None]
    alpha = 0.5 * np.clip(weight, 0.0, 1.0)[..., None]
    rgb = ((1 - alpha) * gray[..., None] + alpha * mixed).clip(0, 255).astype(np.uint8)
    masks = cover >= 0.5
    for c in range(len(CLASSES)):
        box = content_box(masks[c])
        if box is None:
            continue
        y0, x0, y1, x1 = box
        contours, _ = cv2.findContours(masks[c, y0:y1, x0:x1].astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE, offset=(x0, y0))
        cv2.drawContours(rgb, contours, -1, CLASS_RGB[c], 1, cv2.LINE_8)  # crisp: exactly the mask boundary
    present = draw_class_keys(rgb, masks)
    return with_legend(rgb, class_rows(present, "Predicted bones", swatches=True, all_classes=True))
