"""Post-processing chosen on validation: largest component, hole filling, the choice, and its application."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.inference.postprocess import OPTIONS, PostProcessing, choose, fill_holes, largest_component, option_counts


def _blob_with_island_and_hole() -> np.ndarray:
    mask = np.zeros((30, 40), bool)
    mask[5:25, 5:25] = True
    mask[12:16, 12:16] = False  # a hole
    mask[2:4, 33:36] = True  # an island
    return mask


def test_largest_component_and_fill_holes():
    mask = _blob_with_island_and_hole()
    big = largest_component(mask)
    assert not big[2:4, 33:36].any() and big[5:25, 5:25].sum() == mask[5:25, 5:25].sum()
    filled = fill_holes(mask)
    assert filled[12:16, 12:16].all() and filled[2:4, 33:36].all()
    edge = np.zeros((10, 10), bool)
    edge[:, 3:7] = True
    edge[0:4, 4:6] = False  # a notch open to the border is not a hole
    assert not fill_holes(edge)[0:4, 4:6].any()


def test_postprocessing_applies_only_to_chosen_classes_and_round_trips():
    dense = torch.zeros(NUM_CLASSES, 30, 40, dtype=torch.bool)
    dense[0] = dense[1] = torch.from_numpy(_blob_with_island_and_hole())
    choice = PostProcessing(largest_component=(True,) + (False,) * 28, fill_holes=(True,) + (False,) * 28)
    out = choice(ClassMasks.from_dense(dense)).to_dense()
    assert out[0, 12:16, 12:16].all() and not out[0, 2:4, 33:36].any()
    assert torch.equal(out[1], dense[1])
    assert PostProcessing.from_dict(choice.to_dict()) == choice
    with pytest.raises(ValueError, match="unknown class"):
        PostProcessing.from_dict({"finger-99": {"fill_holes": True}})
    with pytest.raises(ValueError, match="true or false"):
        PostProcessing.from_dict({CLASSES[0]: {"fill_holes": "yes"}})


def test_choose_keeps_an_option_only_where_it_raises_dice():
    truth = torch.zeros(NUM_CLASSES, 30, 40, dtype=torch.bool)
    truth[0, 5:25, 5:25] = True  # class 0: the truth is the filled blob without the island
    truth[1] = torch.from_numpy(_blob_with_island_and_hole())  # class 1: the island and the hole are real
    pred = torch.zeros_like(truth)
    pred[0] = pred[1] = torch.from_numpy(_blob_with_island_and_hole())
    counts = option_counts(ClassMasks.from_dense(pred), ClassMasks.from_dense(truth))[None]  # (1, 4, C, 3)
    choice, dice = choose(counts)
    assert dice.shape == (len(OPTIONS), NUM_CLASSES)
    assert choice.largest_component[0] and choice.fill_holes[0] and dice[3, 0] == pytest.approx(1.0)
    assert not choice.largest_component[1] and not choice.fill_holes[1]  # nothing beats doing nothing there
    assert not any(choice.largest_component[2:]) and not any(choice.fill_holes[2:])  # empty classes: no change
