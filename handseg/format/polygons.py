"""Predicted masks back to the annotation format: one simplified polygon per class.

For each class mask the polygon is the outline of **the region it came from**, defined precisely as:

    the largest 8-connected component of the class mask (by pixel count, the first one on a tie), together
    with everything its outer outline encloses (its holes filled, and any other component lying inside them).

That region is exactly what :func:`handseg.format.rasterize.rasterize` fills from the component's outer outline
traced through pixel centres (``cv2.findContours``, ``CHAIN_APPROX_NONE``): an integer vertex (x, y) is the
centre of pixel column x, row y, the project's convention. The outline is then simplified with
``cv2.approxPolyDP`` at the largest tolerance ``epsilon`` found by bisection (to :data:`EPSILON_RESOLUTION`
pixels) whose rasterised polygon keeps a Dice of at least :data:`DICE_TARGET` against that region. Dice is
not strictly monotone in ``epsilon``, so the result is the largest tolerance the bisection met that keeps
the target (every returned polygon meets it), not necessarily the global largest. The Dice against the whole
class mask (all components, holes as predicted) is reported beside it, so what the single-polygon format
loses (small islands, holes) is visible.

A class whose mask is empty gets no polygon: the annotation then lists fewer than 29 classes, which
:func:`handseg.format.annotations.read_annotation` reads with ``require_all=False`` and reports by name with its
default ``require_all=True``. A prediction that found no bone should be looked at, not hidden behind an
invented outline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from handseg.format.annotations import ImageAnnotation, write_annotation
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize_window

DICE_TARGET = 0.995
EPSILON_RESOLUTION = 1.0 / 16.0  # bisection stops when the tolerance interval is narrower than this (pixels)


@dataclass(frozen=True)
class PolygonFit:
    """The polygon of one class mask and how well it reproduces the mask.

    ``polygon``: (N >= 3, 2) int32 (x, y) pixel-centre vertices. ``epsilon``: the ``approxPolyDP`` tolerance
    used (pixels). ``dice``: Dice of the rasterised polygon against the region it came from (module docstring).
    ``dice_mask``: Dice against the whole class mask. ``n_components``: 8-connected components in the mask.
    ``outline_vertices``: vertices of the outline before simplification.
    """

    polygon: np.ndarray
    epsilon: float
    dice: float
    dice_mask: float
    n_components: int
    outline_vertices: int


def _dice(inter: int, a: int, b: int) -> float:
    return 1.0 if a + b == 0 else 2.0 * inter / (a + b)


def _closed_polygon(points: np.ndarray) -> np.ndarray:
    """(M, 2) points -> (max(M, 3), 2) int32: a 1- or 2-point outline (a pixel, a 2-pixel step) is padded by
    repeating its points, which rasterises to the same pixels and meets the format's 3-point minimum."""
    pts = np.asarray(points, dtype=np.int32).reshape(-1, 2)
    if len(pts) < 3:
        pts = pts[np.arange(3) % len(pts)]
    return pts


def largest_outline(mask: np.ndarray) -> tuple[np.ndarray, int] | None:
    """The outer outline of the largest 8-connected component of ``mask``, and the number of components.

    Args:
        mask: (H, W) bool or {0, 1} integer array.
    Returns:
        ``(outline, n_components)`` with outline an (M >= 3, 2) int32 array of (x, y) pixel centres (every
        boundary pixel, in order), or None for an empty mask. Rasterising the outline gives the component
        with its holes filled.
    """
    m = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {m.shape}")
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n < 2:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # argmax: the first (top-most) component on a tie
    x0, y0, w, h = (int(v) for v in stats[k, :4])
    comp = np.ascontiguousarray(labels[y0 : y0 + h, x0 : x0 + w] == k, dtype=np.uint8)
    contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=len).reshape(-1, 2) + np.array([x0, y0])  # one component: one outer contour
    return _closed_polygon(outline), n - 1


def _window(outline: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) bounding box of (x, y) points, inclusive."""
    lo, hi = outline.min(axis=0), outline.max(axis=0)
    return int(lo[1]), int(lo[0]), int(hi[1] - lo[1]) + 1, int(hi[0] - lo[0]) + 1


def simplify_outline(
    outline: np.ndarray, target: float = DICE_TARGET, resolution: float = EPSILON_RESOLUTION
) -> tuple[np.ndarray, float, float]:
    """Simplify a closed pixel-centre outline as much as possible while keeping Dice >= ``target``.

    Args:
        outline: (M >= 3, 2) int32 (x, y) outline, e.g. from :func:`largest_outline`.
        target: the least Dice between the rasterised simplified polygon and the rasterised outline.
        resolution: bisection stops when the tolerance interval is narrower than this (pixels).
    Returns:
        ``(polygon, epsilon, dice)``: (N >= 3, 2) int32 vertices (a subset of the outline's), the
        ``cv2.approxPolyDP`` tolerance used (0.0 when nothing coarser keeps the target: then the polygon is
        the outline without its collinear points, or the outline itself) and the Dice reached.
    """
    outline = _closed_polygon(outline)
    window = _window(outline)  # simplified vertices are outline points, so the window holds every polygon
    region = rasterize_window([outline], window)[0].astype(bool)
    area = int(np.count_nonzero(region))

    def attempt(eps: float) -> tuple[np.ndarray, float] | None:
        poly = cv2.approxPolyDP(outline.reshape(-1, 1, 2), eps, True).reshape(-1, 2)
        if len(poly) < 3:
            return None
        filled = rasterize_window([poly], window)[0].astype(bool)
        return poly.astype(np.int32), _dice(int(np.count_nonzero(filled & region)), int(filled.sum()), area)

    best = attempt(0.0)
    best_eps = 0.0
    if best is None or best[1] < target:  # approxPolyDP(0) only drops collinear points; never worse in practice
        best, best_eps = (outline, 1.0), 0.0
    lo, hi = 0.0, float(max(window[2], window[3]))
    while hi - lo > resolution:
        mid = 0.5 * (lo + hi)
        found = attempt(mid)
        if found is not None and found[1] >= target:
            lo, best, best_eps = mid, found, mid
        else:
            hi = mid
    return best[0], best_eps, best[1]


def mask_to_polygon(mask: np.ndarray, target: float = DICE_TARGET) -> PolygonFit | None:
    """One class mask -> its simplified largest outline (see the module docstring), or None when empty.

    Args:
        mask: (H, W) bool or {0, 1} integer array.
        target: least Dice between the rasterised polygon and the region it came from.
    """
    mask = np.asarray(mask) != 0
    found = largest_outline(mask)
    if found is None:
        return None
    outline, n_components = found
    polygon, eps, dice = simplify_outline(outline, target)
    window = _window(polygon)
    y0, x0, h, w = window
    filled = rasterize_window([polygon], window)[0].astype(bool)
    inter = int(np.count_nonzero(filled & mask[y0 : y0 + h, x0 : x0 + w]))
    dice_mask = _dice(inter, int(filled.sum()), int(np.count_nonzero(mask)))
    return PolygonFit(polygon, eps, dice, dice_mask, n_components, len(outline))


def _fits_in_boxes(masks: ClassMasks, target: float) -> list[PolygonFit | None]:
    """:func:`mask_to_polygon` of every class inside its box, the polygon moved to image coordinates."""
    fits: list[PolygonFit | None] = []
    for box, mask in zip(masks.boxes, masks.masks):
        fit = None if box is None else mask_to_polygon(mask.cpu().numpy(), target)
        if fit is not None:
            fit = replace(fit, polygon=(fit.polygon + np.array([box[1], box[0]], dtype=np.int32)).astype(np.int32))
        fits.append(fit)
    return fits


def masks_to_annotation(
    masks: np.ndarray | ClassMasks, filename: str, target: float = DICE_TARGET
) -> tuple[ImageAnnotation, list[PolygonFit | None]]:
    """Predicted masks -> an :class:`ImageAnnotation` with one polygon per non-empty class.

    Args:
        masks: (29, H, W) bool or {0, 1} masks in CLASSES order (multi-label: classes may overlap), or the
            same as :class:`~handseg.format.class_masks.ClassMasks` (each class is then fitted inside its box).
        filename: the image's file name, recorded in the annotation (e.g. ``image1661319116107.png``).
        target: least Dice of each polygon against the region it came from.
    Returns:
        ``(annotation, fits)``: the annotation (empty classes left out) and one :class:`PolygonFit` per
        class in CLASSES order (None for an empty mask).
    """
    if isinstance(masks, ClassMasks):
        if len(masks) != len(CLASSES):
            raise ValueError(f"expected {len(CLASSES)} classes, got {len(masks)}")
        fits, (height, width) = _fits_in_boxes(masks, target), (masks.height, masks.width)
    else:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.shape[0] != len(CLASSES):
            raise ValueError(f"expected ({len(CLASSES)}, H, W) masks, got shape {masks.shape}")
        fits = [mask_to_polygon(masks[c], target) for c in range(len(CLASSES))]
        height, width = masks.shape[1:]
    polygons = {name: fit.polygon for name, fit in zip(CLASSES, fits) if fit is not None}
    return ImageAnnotation(filename=filename, width=int(width), height=int(height), polygons=polygons), fits


def write_prediction_annotation(
    path: str | os.PathLike, masks: np.ndarray | ClassMasks, filename: str | None = None, target: float = DICE_TARGET,
    extra: dict | None = None,
) -> tuple[Path, list[PolygonFit | None]]:
    """Write predicted masks ((29, H, W) or ClassMasks) as an annotation JSON in the training format, atomically.

    ``filename`` defaults to ``path``'s stem with ``.png``; ``extra`` adds top-level keys (the format's
    readers tolerate them). Returns the path and the per-class fits (None for empty classes, which have no
    polygon in the file).
    """
    path = Path(path)
    ann, fits = masks_to_annotation(masks, filename or path.with_suffix(".png").name, target)
    return write_annotation(path, ann, extra), fits


def fits_summary(fits: list[PolygonFit | None]) -> dict:
    """JSON-ready summary of :func:`masks_to_annotation`'s fits: the empty classes and, per drawn class,
    vertices, tolerance, Dice against its region and against the whole mask, and the component count."""
    per_class = {
        name: {"vertices": len(fit.polygon), "epsilon": round(fit.epsilon, 4), "dice": round(fit.dice, 6),
               "dice_mask": round(fit.dice_mask, 6), "components": fit.n_components}
        for name, fit in zip(CLASSES, fits) if fit is not None
    }
    return {"empty_classes": [name for name, fit in zip(CLASSES, fits) if fit is None], "classes": per_class}
