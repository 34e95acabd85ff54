"""The predicted-Dice model: non-negative least squares, the fit, the flag threshold, the file, Spearman."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats

from evaluator.qc.evaluation import spearman
from evaluator.qc.model import (
    FLAG_BELOW,
    DiceModel,
    QCModel,
    choose_flag_threshold,
    fit_dice_model,
    load_qc_model,
    nonnegative_least_squares,
    save_qc_model,
)
from evaluator.qc.signals import FEATURES, ImageSignals
from handseg.runtime.errors import DataFormatError


def test_nnls_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.normal(size=(60, 5)), rng.normal(size=60)
        assert np.allclose(nonnegative_least_squares(a, b), optimize.nnls(a, b)[0], atol=1e-6)


def test_fit_recovers_a_known_model_and_leaves_out_missing_features():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(400, len(FEATURES)))
    x[:, FEATURES.index("flip_disagreement")] = np.nan  # flip TTA off while fitting
    x[::7, FEATURES.index("stage_disagreement")] = np.nan
    truth = {"uncertain": 0.08, "stage_disagreement": 0.3, "pieces": 0.0, "area": 0.02}
    deficit = 0.01 + sum(w * np.nan_to_num(x[:, FEATURES.index(f)]) for f, w in truth.items())
    rows = ~np.isnan(x[:, FEATURES.index("stage_disagreement")])
    model = fit_dice_model(x[rows], 1.0 - deficit[rows])
    assert "flip_disagreement" not in model.features
    weights = dict(zip(model.features, model.weights))
    for f, w in truth.items():
        assert weights[f] == pytest.approx(w, abs=1e-6)
    assert model.intercept == pytest.approx(0.01, abs=1e-6) and (model.weights >= 0).all()


def _signals(features: np.ndarray, present: np.ndarray) -> ImageSignals:
    n = len(present)
    return ImageSignals(features, present, np.ones(n, int), np.ones(n), np.full(n, -1), np.zeros(n, bool))


def test_bone_dice_is_zero_for_a_missing_bone_and_fills_missing_signals():
    model = DiceModel(("uncertain", "stage_disagreement"), np.array([0.1, 0.5]), 0.02, np.array([0.2, 0.1]))
    features = np.full((29, len(FEATURES)), np.nan)
    features[:, FEATURES.index("uncertain")] = 0.3
    present = np.ones(29, bool)
    present[4] = False
    dice = model.bone_dice(_signals(features, present))
    assert dice[4] == 0.0
    assert dice[0] == pytest.approx(1 - (0.02 + 0.1 * 0.3 + 0.5 * 0.1))  # stage signal missing: its mean


def test_flag_threshold_separates_low_from_high():
    true = np.array([0.80, 0.85, 0.89, 0.91, 0.92, 0.94, 0.95, 0.96, 0.97])
    predicted = np.array([0.86, 0.88, 0.905, 0.91, 0.93, 0.925, 0.94, 0.95, 0.96])
    t = choose_flag_threshold(predicted, true)
    assert 0.905 < t <= 0.925
    assert choose_flag_threshold(predicted[5:], true[5:]) == FLAG_BELOW  # no low image: the default


def test_model_file_round_trips_and_a_bad_file_is_one_line(tmp_path):
    model = DiceModel(("uncertain",), np.array([0.2]), 0.01, np.array([0.1]), 0.91)
    path = save_qc_model(tmp_path / "qc_model.json", QCModel(model, None, {"n_images": 3}))
    back = load_qc_model(path)
    assert back.dice.features == ("uncertain",) and back.dice.flag_below == 0.91 and back.reference is None
    assert back.fit == {"n_images": 3}
    data = json.loads(path.read_text())
    data["dice_model"]["features"] = ["magic"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="qc_model.json: not a QC model file"):
        load_qc_model(path)


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 5, 40).astype(float)
    b = a + rng.normal(0, 2, 40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_qc_csv_round_trips_and_a_foreign_csv_is_one_line(tmp_path):
    from evaluator.qc.files import read_qc_csv, write_qc_csv

    path = write_qc_csv(tmp_path / "qc.csv", [["ID1/a.png", "0.9412", "0", ""],
                                              ["ID1/b.png", "0.7010", "1", "finger-16 missing; uncertain carpals"]])
    assert path.read_text().splitlines()[0] == "image,predicted_dice,flag,reason"
    rows = read_qc_csv(path)
    assert rows[1] == {"image": "ID1/b.png", "predicted_dice": 0.701, "flag": True,
                       "reason": "finger-16 missing; uncertain carpals"}
    (tmp_path / "other.csv").write_text("image_name,class,rle\n")
    with pytest.raises(DataFormatError, match="other.csv: expected the columns image,predicted_dice,flag,reason"):
        read_qc_csv(tmp_path / "other.csv")
