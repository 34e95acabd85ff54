"""Overlay pictures: outcome colours with their legend, class keys on the bones, prediction-only overlays."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from evaluator.overlays import (
    CLASS_RGB,
    PANEL_RGB,
    PANEL_WIDTH,
    LegendRow,
    class_key,
    label_point,
    legend_panel,
    prediction_overlay,
)
from evaluator.report import FN_RGB, FP_RGB, TP_RGB, comparison_overlay, overlay_rgb
from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize


@pytest.fixture(scope="module")
def phantom_case(phantom_root):
    """(image, target, pred) of one 256 px phantom image; pred: every class shifted 3 px right, Pisiform
    missed, an extra blob of finger-5."""
    sample = index_split(phantom_root, "train")[0]
    image = read_image(sample.image_path)
    target = rasterize(polygons_in_order(read_annotation(sample.label_path)), image.shape).astype(bool)
    pred = np.roll(target, 3, axis=2)
    pred[CLASSES.index("Pisiform")] = False
    pred[CLASSES.index("finger-5"), 5:15, 5:15] = True
    return image, target, pred


def has_colour(rgb: np.ndarray, colour) -> bool:
    return bool((rgb.reshape(-1, 3) == np.asarray(colour, np.uint8)).all(axis=1).any())


def test_class_keys():
    assert [class_key(c) for c in CLASSES[:3]] == ["1", "2", "3"] and class_key("finger-19") == "19"
    keys = [class_key(c) for c in CLASSES]
    assert len(set(keys)) == 29 and class_key("Pisiform") == "Pi" and class_key("Ulna") == "Ul"


def test_label_point_is_deepest_inside_the_largest_part():
    mask = np.zeros((40, 60), np.uint8)
    cv2.circle(mask, (20, 22), 12, 1, -1)
    mask[8:14, 20:24] = 1  # a bump: the centre of mass moves, the deepest point does not
    mask[1:3, 50:52] = 1  # a smaller part elsewhere
    assert label_point(mask.astype(bool)) == (20, 22)
    assert label_point(np.zeros((4, 4), bool)) is None


def test_comparison_overlay_has_outcome_legend_and_keys(phantom_case):
    image, target, pred = phantom_case
    plain = overlay_rgb(image, pred, target)
    rgb = comparison_overlay(image, pred, target)
    h, w = plain.shape[:2]
    assert rgb.shape[1] == w + PANEL_WIDTH and rgb.shape[0] >= h
    panel = rgb[:, w:]
    for colour in (TP_RGB, FP_RGB, FN_RGB):  # the three swatches
        assert has_colour(panel, colour)
    assert (panel == np.asarray(PANEL_RGB, np.uint8)).all(axis=2).mean() > 0.5
    picture = rgb[:h, :w]
    changed = (picture != plain).any(axis=2)
    assert 0 < changed.mean() < 0.2  # keys written on the picture, the picture otherwise kept
    white = (picture >= 230).all(axis=2) & (plain < 230).any(axis=2)
    assert white.sum() > 20 * 4  # the keys, in white


def test_prediction_overlay_colours_every_class_and_lists_all(phantom_case):
    image, _target, pred = phantom_case
    rgb = prediction_overlay(image, pred)
    h, w = image.shape
    assert rgb.shape[1] == w + PANEL_WIDTH and rgb.dtype == np.uint8
    panel, picture = rgb[:, w:], rgb[:h, :w]
    for c, colour in enumerate(CLASS_RGB):  # one swatch per class in the legend
        assert has_colour(panel, colour), CLASSES[c]
    outlined = [c for c, colour in enumerate(CLASS_RGB) if has_colour(picture, colour)]
    assert CLASSES.index("Pisiform") not in outlined and len(outlined) >= 25  # outlines in the class colour
    assert len(set(CLASS_RGB)) == 29
    radius = CLASSES.index("Radius")
    only = pred[radius] & ~np.delete(pred, radius, axis=0).any(0)  # pixels of the radius alone: half its colour
    ys, xs = np.nonzero(only)
    tint = picture[ys, xs].astype(float) - 0.5 * image[ys, xs, None]
    assert np.median(tint, axis=0) == pytest.approx(0.5 * np.asarray(CLASS_RGB[radius]), abs=1.5)


def test_large_images_are_shrunk_and_small_legends_grow_the_canvas():
    image = np.full((1536, 1024), 100, np.uint8)
    pred = np.zeros((29, 1536, 1024), bool)
    pred[0, 100:400, 100:300] = True
    rgb = prediction_overlay(image, pred, max_side=768)
    assert rgb.shape == (768, 512 + PANEL_WIDTH, 3)
    tiny = comparison_overlay(np.zeros((16, 16), np.uint8), pred[:, :16, :16], pred[:, :16, :16])
    assert tiny.shape[0] > 16 * 5  # the legend's rows need more height than the picture


def test_legend_panel_rows():
    rows = [LegendRow("Heading", heading=True), LegendRow("tp", TP_RGB), LegendRow("name", key="Pi", muted=True)]
    panel = legend_panel(rows, height=10)
    assert panel.shape[1] == PANEL_WIDTH and panel.shape[0] >= 3 * 20 and has_colour(panel, TP_RGB)


def test_overlay_from_class_masks_matches_the_dense_overlay(phantom_case):
    """ClassMasks (each class in its box) give the dense overlay exactly at full size, and within half a display
    pixel of placement when shrunk (IoU of the drawn masks >= 0.9)."""
    from evaluator.overlays import box_coverage
    from handseg.format.class_masks import ClassMasks

    image, _target, pred = phantom_case
    boxed = ClassMasks.from_dense(pred)
    assert np.array_equal(prediction_overlay(image, boxed), prediction_overlay(image, pred))
    big = cv2.resize(image, (1000, 1000), interpolation=cv2.INTER_LINEAR)
    big_pred = np.stack([cv2.resize(p.astype(np.uint8), (1000, 1000), interpolation=cv2.INTER_NEAREST) for p in pred])
    dense = np.stack([cv2.resize(p.astype(np.float32), (300, 300), interpolation=cv2.INTER_AREA) for p in big_pred])
    cover = box_coverage(ClassMasks.from_dense(big_pred), (300, 300))
    on_a, on_b = cover >= 0.5, dense >= 0.5
    assert cover.shape == dense.shape and np.count_nonzero(on_a & on_b) / np.count_nonzero(on_a | on_b) >= 0.9
    a = prediction_overlay(big, ClassMasks.from_dense(big_pred), max_side=300)
    b = prediction_overlay(big, big_pred, max_side=300)
    assert a.shape == b.shape and np.mean(np.all(a == b, axis=2)) >= 0.97
