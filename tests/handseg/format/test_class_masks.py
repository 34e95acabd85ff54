"""Masks kept in per-class boxes: round trips, Dice counts, polygons rasterised in boxes, RLE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image_size
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.class_masks import ClassMasks, bounding_box
from handseg.format.metrics import dice_counts
from handseg.format.rasterize import rasterize
from handseg.format.rle import rle_encode_many


def _random_masks(c=5, h=40, w=50, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dense = torch.zeros(c, h, w, dtype=torch.bool)
    for k in range(c - 1):  # the last class stays empty
        y, x = torch.randint(0, h - 8, (1,), generator=g).item(), torch.randint(0, w - 8, (1,), generator=g).item()
        dense[k, y:y + 8, x:x + 6] = torch.rand(8, 6, generator=g) > 0.3
    dense[0, -1, -1] = True  # a pixel in the corner: the box reaches both far borders
    return dense


def test_dense_round_trip_and_tight_boxes():
    dense = _random_masks()
    masks = ClassMasks.from_dense(dense)
    assert torch.equal(masks.to_dense(), dense)
    assert masks.boxes[-1] is None and masks.masks[-1] is None
    for box, mask in zip(masks.boxes[:-1], masks.masks[:-1]):
        assert bounding_box(mask) == (0, 0, mask.shape[0], mask.shape[1])  # tight
    np.testing.assert_array_equal(masks.areas(), dense.sum((1, 2)).numpy())
    with pytest.raises(ValueError):
        ClassMasks(4, 4, [(0, 0, 2, 2)], [torch.zeros(3, 3, dtype=torch.bool)])


def test_counts_equal_dense_dice_counts():
    pred, truth = _random_masks(seed=1), _random_masks(seed=2)
    got = ClassMasks.from_dense(pred).counts(ClassMasks.from_dense(truth))
    np.testing.assert_array_equal(got, dice_counts(pred.numpy(), truth.numpy()))


def test_rle_equals_the_dense_encoder():
    dense = _random_masks(seed=3)
    assert ClassMasks.from_dense(dense).rle() == rle_encode_many(dense.numpy())


def test_polygons_in_boxes_equal_the_full_rasterisation(phantom_root):
    for sample in index_split(phantom_root, "train")[:3]:
        hw = read_image_size(sample.image_path)
        polygons = polygons_in_order(read_annotation(sample.label_path))
        masks = ClassMasks.from_polygons(polygons, hw)
        np.testing.assert_array_equal(masks.to_dense().numpy(), rasterize(polygons, hw).astype(bool))


def test_map_shrinks_boxes_and_drops_emptied_classes():
    masks = ClassMasks.from_dense(_random_masks(seed=4))
    cleared = masks.map(lambda c, m: torch.zeros_like(m) if c == 1 else m)
    assert cleared.boxes[1] is None and cleared.boxes[0] == masks.boxes[0]
    assert torch.equal(cleared.to_dense()[0], masks.to_dense()[0])
