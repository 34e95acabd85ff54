"""Per-class areas in mm^2 from a pixel spacing."""

from __future__ import annotations

import numpy as np
import pytest

from handseg.format.areas import class_areas_mm2, pixel_area_mm2
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES


def test_pixel_area_from_one_or_two_spacings():
    assert pixel_area_mm2(0.1) == pytest.approx(0.01)
    assert pixel_area_mm2((0.1, 0.2)) == pytest.approx(0.02)
    assert pixel_area_mm2([0.15]) == pytest.approx(0.0225)
    for bad in (0, -0.1, float("nan"), (0.1, 0.1, 0.1), "0.1", (0.1, None)):
        with pytest.raises(ValueError, match="pixel spacing"):
            pixel_area_mm2(bad)


def test_class_areas_count_each_class_on_its_own():
    masks = np.zeros((29, 10, 20), np.uint8)
    masks[0, :5, :4] = 1  # 20 px
    masks[28, :, :] = 1  # 200 px, overlapping class 0
    areas = class_areas_mm2(ClassMasks.from_dense(masks).areas(), (0.5, 0.25))
    assert list(areas) == list(CLASSES)
    assert areas["finger-1"] == pytest.approx(20 * 0.125) and areas["Ulna"] == pytest.approx(200 * 0.125)
    assert areas["Radius"] == 0.0
    with pytest.raises(ValueError, match="expected 29 per-class pixel counts"):
        class_areas_mm2(masks[0], 0.1)
