"""clip_polygon: Sutherland-Hodgman clipping to a square or a rectangle."""

from __future__ import annotations

import numpy as np

from handseg.format.geometry import clip_polygon
from handseg.phantom.shapes import polygon_area


def test_inside_polygon_is_returned_unchanged():
    square = np.array([[1, 1], [5, 1], [5, 4], [1, 4]])
    out = clip_polygon(square, 0.0, 10.0)
    assert out.dtype == np.float64 and np.array_equal(out, square)


def test_clip_to_a_square_cuts_exactly():
    square = np.array([[-2.0, -2.0], [4.0, -2.0], [4.0, 4.0], [-2.0, 4.0]])
    out = clip_polygon(square, 0.0, 3.0)
    assert out.min() >= 0.0 and out.max() <= 3.0
    assert abs(polygon_area(out)) == 9.0


def test_clip_to_a_rectangle_per_axis():
    square = np.array([[-2.0, -2.0], [10.0, -2.0], [10.0, 10.0], [-2.0, 10.0]])
    out = clip_polygon(square, 0.0, (7.0, 3.0))  # x in [0, 7], y in [0, 3]
    assert out[:, 0].max() == 7.0 and out[:, 1].max() == 3.0
    assert abs(polygon_area(out)) == 21.0


def test_polygon_outside_is_clipped_away():
    tri = np.array([[20.0, 20.0], [30.0, 20.0], [25.0, 28.0]])
    assert len(clip_polygon(tri, 0.0, (10.0, 10.0))) == 0
    assert len(clip_polygon(np.zeros((0, 2)), 0.0, 10.0)) == 0
