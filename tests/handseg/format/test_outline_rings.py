"""Outlines of a mask, nested; bridges between closest vertices; simplification that keeps the bridges' ends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from handseg.format.outline_rings import JoinPlan, chessboard_gap, mask_rings, nearest_pair, simplify_keeping
from handseg.format.rasterize import rasterize


@pytest.mark.parametrize("seed", range(6))
def test_nearest_pair_is_the_brute_force_one(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 300, (int(rng.integers(1, 900)), 2))
    b = rng.integers(0, 300, (int(rng.integers(1, 900)), 2)) + rng.integers(-50, 400, 2)
    diff = np.abs(a[:, None, :] - b[None, :, :])
    key = diff.max(axis=2) * (1 << 32) + (diff**2).sum(axis=2)
    i, j = nearest_pair(a, b)
    assert key[i, j] == key.min()
    assert chessboard_gap(a, b) == diff.max(axis=2).min()


def test_holes_run_the_other_way_and_join_exactly():
    """A ring-shaped bone: its outer outline and its hole's, joined by a bridge inside the bone, fill back to the
    mask exactly; the hole's outline runs the other way round, so non-zero filling agrees with even-odd."""
    mask = np.zeros((40, 40), np.uint8)
    cv2.circle(mask, (20, 20), 15, 1, -1)
    cv2.circle(mask, (20, 20), 6, 0, -1)
    outer, hole = sorted(mask_rings(mask), key=lambda r: r.hole)
    assert (outer.parent, hole.parent, hole.hole) == (-1, 0, True)
    signs = [np.sign(cv2.contourArea(r.points.reshape(-1, 1, 2).astype(np.float32), oriented=True))
             for r in (outer, hole)]
    assert signs[0] == -signs[1] != 0
    polygon = JoinPlan.between([outer.points, hole.points], [0, 0]).polygon()
    assert np.array_equal(rasterize([polygon], mask.shape)[0], mask)


def test_simplification_keeps_the_bridge_ends():
    mask = np.zeros((60, 60), np.uint8)
    cv2.ellipse(mask, (30, 30), (25, 12), 20, 0, 360, 1, -1)
    (ring,) = mask_rings(mask)
    for keep in ([], [7], [7, 50], [3, 40, 90]):
        simple, where = simplify_keeping(ring.points, keep, 1.5)
        assert len(simple) < len(ring.points) / 3
        assert sorted(where) == sorted(keep)
        for k in keep:  # each kept vertex is still there, at the index reported
            assert tuple(simple[where[k]]) == tuple(ring.points[k])
    assert simplify_keeping(ring.points, [7], None)[0] is ring.points
