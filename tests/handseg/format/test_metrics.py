"""Competition Dice: hand-computed values, counts that shard and gather exactly, numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handseg.format.classes import CLASSES
from handseg.format.metrics import (
    DICE_EPS,
    DiceSummary,
    dice_counts,
    dice_counts_rle,
    dice_from_counts,
    dice_score,
    format_dice_table,
    summarize_dice,
)
from handseg.format.rle import rle_encode


def small_case():
    """Three 2x3 channels: partial overlap, empty vs empty, empty prediction vs a target."""
    pred = np.zeros((3, 2, 3), np.uint8)
    target = np.zeros((3, 2, 3), np.uint8)
    pred[0] = [[1, 1, 0], [0, 1, 0]]
    target[0] = [[1, 0, 0], [0, 1, 1]]
    target[2] = [[1, 1, 1], [1, 0, 0]]
    return pred, target


def test_hand_computed_counts_and_dice():
    pred, target = small_case()
    counts = dice_counts(pred, target)
    assert counts.dtype == np.int64 and counts.shape == (3, 3)
    np.testing.assert_array_equal(counts, [[2, 3, 3], [0, 0, 0], [0, 0, 4]])
    dice = dice_from_counts(counts)
    assert dice.dtype == np.float64
    assert dice[0] == pytest.approx((2 * 2 + 1e-4) / (3 + 3 + 1e-4), abs=1e-12)  # 0.66667
    assert dice[1] == 1.0  # empty vs empty
    assert dice[2] == pytest.approx(1e-4 / (4 + 1e-4), abs=1e-12)  # empty vs non-empty ~ 0
    assert dice[2] < 1e-4
    assert DICE_EPS == 1e-4


def test_prediction_of_nothing_against_nothing_and_perfect():
    m = np.zeros((2, 4, 4), bool)
    m[1, 1:3, 1:3] = True
    np.testing.assert_array_equal(dice_score(m, m), [1.0, 1.0])
    extra = m.copy()
    extra[0, 0, 0] = True  # one false-positive pixel where nothing is expected
    assert dice_score(extra, m)[0] == pytest.approx(1e-4 / (1 + 1e-4))


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    pred = rng.random((29, 16, 12)) < 0.3
    target = rng.random((29, 16, 12)) < 0.3
    ref = dice_counts(pred, target)
    np.testing.assert_array_equal(dice_counts(torch.from_numpy(pred), torch.from_numpy(target)), ref)
    np.testing.assert_array_equal(
        dice_counts(torch.from_numpy(pred).float(), torch.from_numpy(target).to(torch.uint8)), ref
    )
    np.testing.assert_array_equal(dice_counts(pred.astype(np.uint8) * 255, target), ref)
    assert isinstance(dice_counts(torch.from_numpy(pred), torch.from_numpy(target)), np.ndarray)


def test_shape_mismatch():
    with pytest.raises(ValueError):
        dice_counts(np.zeros((2, 3, 3)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        dice_from_counts(np.zeros((2, 4)))


def test_summary_is_mean_over_images_then_classes_and_shards_gather_exactly():
    rng = np.random.default_rng(1)
    pairs = [(rng.random((29, 8, 8)) < 0.4, rng.random((29, 8, 8)) < 0.4) for _ in range(5)]
    counts = np.stack([dice_counts(p, g) for p, g in pairs])  # (5, 29, 3)
    per_image = dice_from_counts(counts)
    assert per_image.shape == (5, 29)
    summary = summarize_dice(per_image)
    assert isinstance(summary, DiceSummary) and summary.n_images == 5
    assert list(summary.per_class) == list(CLASSES)
    assert summary.per_class["finger-1"] == pytest.approx(per_image[:, 0].mean())
    assert summary.mean == pytest.approx(per_image.mean(axis=0).mean())
    # Two "processes" each count their shard; concatenating counts gives the same summary.
    shard_a, shard_b = counts[:2], counts[2:]
    gathered = summarize_dice(dice_from_counts(np.concatenate([shard_a, shard_b])))
    assert gathered == summary


def test_summary_of_known_values_and_table():
    per_image = np.ones((2, 29))
    per_image[0, CLASSES.index("Pisiform")] = 0.5
    summary = summarize_dice(per_image)
    assert summary.per_class["Pisiform"] == 0.75
    assert summary.mean == pytest.approx((28 + 0.75) / 29)
    table = format_dice_table(summary)
    lines = table.splitlines()
    rows = [ln for ln in lines if ln.startswith("| ")]
    assert lines[0].startswith("| class") and len(rows) == 2 + 29 + 1  # header, rule, classes, mean
    assert "| Pisiform" in table and "0.7500" in table and f"**{summary.mean:.4f}**" in table
    with pytest.raises(ValueError):
        summarize_dice(np.zeros((0, 29)))
    with pytest.raises(ValueError):
        summarize_dice(np.zeros((3, 28)))


def test_counts_from_rle_strings_equal_counts_of_decoded_masks():
    rng = np.random.default_rng(0)
    pred = rng.random((4, 33, 29)) < [[[0.0]], [[0.2]], [[0.5]], [[0.9]]]
    target = (rng.random((4, 33, 29)) < 0.4).astype(np.uint8)
    target[0] = 0
    rles = [rle_encode(m) for m in pred]
    np.testing.assert_array_equal(dice_counts_rle(rles, target), dice_counts(pred, target))
    with pytest.raises(ValueError, match="3 RLE strings for 4"):
        dice_counts_rle(rles[:3], target)
    with pytest.raises(ValueError, match="past the 33x29 image"):
        dice_counts_rle(["1 2000", "", "", ""], target)
