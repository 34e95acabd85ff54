"""The predicted-Dice model: a small linear model of how much Dice each bone loses, from its QC signals.

Per present bone, ``1 - Dice = intercept + sum_k weight_k * feature_k`` (features of
:data:`evaluator.qc.signals.FEATURES`), clipped to [0, 1], with every weight and the intercept >= 0: each signal
can only lower the predicted Dice, which keeps the model monotone and readable. A missing bone is predicted at
Dice 0 (a hand has all 29). The image's predicted Dice is the mean over the 29 bones, as the competition's Dice
is. Fitted by non-negative least squares on bones with known Dice (validation images, out of fold for the
model, and perturbed copies of them; :mod:`evaluator.qc.fitting`); a feature the fitting data lacks (flip TTA
off, no cascade) gets no weight, and a feature missing at prediction time takes its mean over the fitting rows.
The file (``qc_model.json``, beside the thresholds file) holds the model, the flag threshold and the anatomy
reference (:mod:`evaluator.qc.reference`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluator.qc.reference import AnatomyReference
from evaluator.qc.signals import FEATURES, ImageSignals
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import DataFormatError

MODEL_FILE = "qc_model.json"
FLAG_BELOW = 0.915  # default flag threshold: between "needs review" (< 0.90) and "fine" (>= 0.93)
FLAG_RANGE = (0.90, 0.93)


@dataclass(frozen=True)
class DiceModel:
    """``1 - bone Dice = intercept + features @ weights`` (module docstring); ``fill``: per feature, the value
    used where it is missing; ``flag_below``: an image whose predicted Dice is lower is flagged."""

    features: tuple[str, ...]
    weights: np.ndarray
    intercept: float
    fill: np.ndarray
    flag_below: float = FLAG_BELOW

    def bone_dice(self, signals: ImageSignals) -> np.ndarray:
        """(C,) predicted Dice per bone (0 for a missing bone)."""
        x = np.stack([signals.feature(f) for f in self.features], axis=1) if self.features else np.zeros((29, 0))
        x = np.where(np.isnan(x), self.fill[None, :], x)
        deficit = np.clip(self.intercept + x @ self.weights, 0.0, 1.0)
        return np.where(signals.present, 1.0 - deficit, 0.0)

    def contributions(self, signals: ImageSignals) -> np.ndarray:
        """(C, len(features)) each feature's share of each bone's predicted deficit (weight x value)."""
        x = np.stack([signals.feature(f) for f in self.features], axis=1)
        return np.where(np.isnan(x), 0.0, x) * self.weights[None, :]

    def to_dict(self) -> dict:
        return {"features": list(self.features),
                "weights": {f: round(float(w), 6) for f, w in zip(self.features, self.weights)},
                "intercept": round(float(self.intercept), 6),
                "fill": {f: round(float(v), 6) for f, v in zip(self.features, self.fill)},
                "flag_below": round(float(self.flag_below), 4)}

    @classmethod
    def from_dict(cls, data: dict) -> "DiceModel":
        features = tuple(data["features"])
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise ValueError(f"unknown feature {unknown[0]!r}")
        return cls(features, np.array([float(data["weights"][f]) for f in features]), float(data["intercept"]),
                   np.array([float(data["fill"][f]) for f in features]), float(data["flag_below"]))


def nonnegative_least_squares(a: np.ndarray, b: np.ndarray, sweeps: int = 2000) -> np.ndarray:
    """x >= 0 minimising ``|a @ x - b|^2`` (coordinate descent on the normal equations; a handful of unknowns)."""
    g, h = a.T @ a, a.T @ b
    x = np.zeros(a.shape[1])
    for _ in range(sweeps):
        before = x.copy()
        for k in range(len(x)):
            if g[k, k] > 0:
                x[k] = max(0.0, x[k] - (g[k] @ x - h[k]) / g[k, k])
        if np.max(np.abs(x - before)) < 1e-10:
            break
    return x


def fit_dice_model(features: np.ndarray, dice: np.ndarray) -> DiceModel:
    """The model from (M, len(FEATURES)) features (NaN where missing) of M present bones and their (M,) true
    Dice; features missing from every row are left out."""
    if len(dice) == 0:
        raise ValueError("no bones with a known Dice to fit the QC model on")
    used = [k for k in range(features.shape[1]) if not np.isnan(features[:, k]).all()]
    x = features[:, used]
    fill = np.array([np.nanmean(x[:, j]) for j in range(x.shape[1])])
    x = np.where(np.isnan(x), fill[None, :], x)
    solution = nonnegative_least_squares(np.column_stack([np.ones(len(x)), x]), 1.0 - dice)
    return DiceModel(tuple(FEATURES[k] for k in used), solution[1:], float(solution[0]), fill)


def choose_flag_threshold(predicted: np.ndarray, true: np.ndarray) -> float:
    """The flag threshold within :data:`FLAG_RANGE` that best separates images with true Dice < 0.90 (to flag)
    from those >= 0.93 (to leave): the most caught minus twice the share wrongly flagged; the middle of the
    best ones; :data:`FLAG_BELOW` when the data has no image of either kind."""
    low, high = true < FLAG_RANGE[0], true >= FLAG_RANGE[1]
    if not low.any() or not high.any():
        return FLAG_BELOW
    grid = np.round(np.arange(FLAG_RANGE[0], FLAG_RANGE[1] + 1e-9, 0.0025), 4)
    scores = np.array([(predicted[low] < t).mean() - 2.0 * (predicted[high] < t).mean() for t in grid])
    best = grid[np.isclose(scores, scores.max())]
    return float(best[len(best) // 2])


@dataclass(frozen=True)
class QCModel:
    """The file's content: the predicted-Dice model (None: QC without a predicted Dice), the anatomy reference
    and what the fitting measured."""

    dice: DiceModel | None
    reference: AnatomyReference | None
    fit: dict


def save_qc_model(path: str | Path, model: QCModel) -> Path:
    data = {"version": 1, "model": "per bone: 1 - Dice = intercept + sum(weights * features), non-negative "
                                   "least squares; a missing bone is Dice 0; image = mean of the 29 bones",
            "dice_model": None if model.dice is None else model.dice.to_dict(),
            "fit": model.fit,
            "reference": None if model.reference is None else model.reference.to_dict()}
    return atomic_write_text(Path(path), json.dumps(data, indent=1) + "\n")


def load_qc_model(path: str | Path) -> QCModel:
    """Read a QC model file; a malformed one is a DataFormatError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        dice = None if data.get("dice_model") is None else DiceModel.from_dict(data["dice_model"])
        reference = None if data.get("reference") is None else AnatomyReference.from_dict(data["reference"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataFormatError(path, f"not a QC model file ({exc.__class__.__name__}: {exc})") from None
    return QCModel(dice, reference, data.get("fit", {}))
