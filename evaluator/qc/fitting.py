"""Fit the QC model: the anatomy reference from the training labels, the predicted-Dice model on validation.

The validation fold of the deployed checkpoint's training run is out of fold for the model: it never trained
on it. Each validation image is predicted as it is and, to show the model what low Dice looks like, every
second one also as a perturbed copy (``copies`` per image on average, 0.5 by default;
:class:`evaluator.perturb.Perturbation`, the robustness report's kinds at harsher strengths,
:data:`FIT_PERTURBATIONS`, one after the other; labels moved with the image). Every prediction goes through
the deployed engine, thresholds and post-processing with the QC probes on
(:func:`evaluator.qc.assess.predict_with_qc`); its true per-bone Dice comes from the labels. The test split and
the failure cases are never used: they are what the QC report measures on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from evaluator.config import EvalConfig
from evaluator.context import build_context
from evaluator.perturb import Perturbation
from evaluator.predict import Predictor
from evaluator.qc.assess import QualityControl, predict_with_qc
from evaluator.qc.evaluation import spearman
from evaluator.qc.model import QCModel, choose_flag_threshold, fit_dice_model
from evaluator.qc.reference import AnatomyReference, fit_reference, label_masks
from evaluator.qc.signals import FEATURES
from evaluator.robustness import load_sample
from evaluator.validation_mode import eval_data_config
from handseg.data.dataset_index import load_split
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.class_masks import ClassMasks
from handseg.format.metrics import dice_from_counts

# Harsher than the robustness report's strengths, so that the fitting data reaches low Dice.
FIT_PERTURBATIONS = (Perturbation("noise", 45.0), Perturbation("zoom", 0.55), Perturbation("contrast", 0.35),
                     Perturbation("blur", 6.0), Perturbation("gamma", 0.35), Perturbation("rotation", 75.0),
                     Perturbation("translation", 0.25), Perturbation("jpeg", 8.0), Perturbation("gamma", 2.8),
                     Perturbation("zoom", 1.5), Perturbation("noise", 30.0), Perturbation("rotation", -60.0))


@dataclass
class FitData:
    """Per prediction: ``features`` (29, len(FEATURES)), ``present`` (29,), ``dice`` (29,) true, and ``names``."""

    features: list[np.ndarray] = field(default_factory=list)
    present: list[np.ndarray] = field(default_factory=list)
    dice: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    signals: list = field(default_factory=list)


def training_reference(samples) -> AnatomyReference:
    """The anatomy reference from the labels of ``samples`` (the training images)."""
    def masks():
        for sample in samples:
            ann = read_annotation(sample.label_path)
            yield label_masks(polygons_in_order(ann), ann.hw)
    return fit_reference(masks())


def copies_of(i: int, copies: float) -> int:
    """How many perturbed copies image ``i`` gets for ``copies`` per image on average (0.5: every second one)."""
    return int((i + 1) * copies + 1e-9) - int(i * copies + 1e-9)


def collect(predictor: Predictor, samples, reference: AnatomyReference, copies: float = 0.5,
            progress: bool = True) -> FitData:
    """Signals and true Dice of every validation image and its perturbed copies (``copies`` per image on
    average), the perturbations taken in turn."""
    qc = QualityControl(QCModel(None, reference, {}))
    data = FitData()
    total = len(samples) + sum(copies_of(i, copies) for i in range(len(samples)))
    done = 0
    with tqdm(total=total, desc="fit qc", unit="image", disable=not progress) as bar:
        for i, sample in enumerate(samples):
            image, polygons = load_sample(sample)
            variants = [("", image, polygons)]
            for _ in range(copies_of(i, copies)):
                p = FIT_PERTURBATIONS[done % len(FIT_PERTURBATIONS)]
                done += 1
                variants.append((f" {p.kind} {p.strength:g}", *p.apply(image, polygons, seed=i)))
            for suffix, img, polys in variants:
                masks, result = predict_with_qc(predictor.call, img, qc)
                dice = dice_from_counts(masks.counts(ClassMasks.from_polygons(polys, img.shape)))
                data.features.append(result.signals.features)
                data.present.append(result.signals.present)
                data.dice.append(dice)
                data.names.append(sample.rel + suffix)
                data.signals.append(result.signals)
                bar.update()
    return data


def fit_model(data: FitData, reference: AnatomyReference) -> QCModel:
    """The predicted-Dice model on the present bones of ``data``, its flag threshold, and what it measures on
    its own fitting data."""
    present = np.stack(data.present)
    features, dice = np.stack(data.features)[present], np.stack(data.dice)[present]
    model = fit_dice_model(features, dice)
    predicted = np.array([model.bone_dice(s).mean() for s in data.signals])
    true = np.stack(data.dice).mean(axis=1)
    model = type(model)(model.features, model.weights, model.intercept, model.fill,
                        choose_flag_threshold(predicted, true))
    fit = {"n_images": len(data.names), "n_bones": int(present.sum()), "features": list(FEATURES),
           "spearman": round(spearman(predicted, true), 4),
           "mean_abs_error": round(float(np.abs(predicted - true).mean()), 4),
           "true_dice_range": [round(float(true.min()), 4), round(float(true.max()), 4)],
           "images": data.names}
    return QCModel(model, reference, fit)


def fit_qc(cfg: EvalConfig, file: str | Path = "<config>", copies: float = 0.5, progress: bool = True) -> QCModel:
    """The QC model of an evaluation config (module docstring), with the seconds it took in ``fit``."""
    start = time.perf_counter()
    ctx = build_context(cfg, file)
    ckpt, predictor = ctx.ckpt, Predictor.from_context(ctx)
    split = load_split(eval_data_config(cfg, ckpt), file=file, key="config.data")
    reference = training_reference(split.train)
    model = fit_model(collect(predictor, split.val, reference, copies, progress), reference)
    model.fit.update({"checkpoint": str(ckpt.folder), "copies": copies, "reference_images": len(split.train),
                      "seconds": round(time.perf_counter() - start, 1)})
    return model
