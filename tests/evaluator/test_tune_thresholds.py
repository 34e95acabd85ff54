"""Threshold search from probability histograms: exact Dice at every grid threshold."""

from __future__ import annotations

import numpy as np
import torch

from evaluator import thresholds as tune


def test_histogram_dice_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(29, 40, 40, generator=g)
    gt = (torch.rand(29, 40, 40, generator=g) < 0.3).to(torch.uint8)
    bins = 20
    dice = tune.dice_per_threshold(tune.histograms(probs, gt, bins)[None])[0]
    for k in (1, 7, 10, 19):
        pred = (probs * bins).long() >= k
        inter = (pred & gt.bool()).sum((1, 2)).numpy()
        ref = (2 * inter + 1e-4) / (pred.sum((1, 2)).numpy() + gt.sum((1, 2)).numpy() + 1e-4)
        np.testing.assert_allclose(dice[:, k - 1], ref, rtol=0, atol=1e-12)


def test_best_threshold_finds_the_separating_value():
    # Class 0: ground truth exactly where p >= 0.7 -> Dice 1 at 0.7; every other class empty everywhere.
    probs = torch.linspace(0, 0.999, 100 * 100).reshape(1, 100, 100).repeat(29, 1, 1)
    gt = torch.zeros_like(probs, dtype=torch.uint8)
    gt[0] = probs[0] >= 0.7
    thresholds, tuned, at_default = tune.best_thresholds(tune.histograms(probs, gt, 10)[None])
    assert thresholds[0] == 0.7 and tuned[0] == 1.0 and at_default[0] < 1.0
    assert tuned.min() >= at_default.min()
