"""The QC report: how far the quality control can be trusted, measured where the true Dice is known.

Sets: the held-out test split (labels outside the layout, e.g. ``data/phantom/test_labels``), the same test
images perturbed as the robustness report perturbs (its kinds and strengths from the eval config, ``per_image``
of them per image, in turn; labels moved with the image) and, since those keep nearly every image above 0.90,
under the fit's harsher perturbations (:data:`evaluator.qc.fitting.FIT_PERTURBATIONS`, on these other images),
and each phantom failure case (:mod:`handseg.phantom.failures`). None of them is used to fit the QC model.

Per image: true Dice (per bone and mean), predicted Dice, flag, reason and the bones it names. Measures: Spearman
correlation of predicted and true Dice, the share of images with true Dice < 0.90 that are flagged and of those
>= 0.93, how often a flagged reason names the worst bone (lowest true Dice, ties within 0.001), each failure
case's flag rate and how often its reason names the case's bones, and QC's cost per image (inference with and
without QC on the same images).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from evaluator.config import EvalConfig
from evaluator.eval_workers import map_in_workers
from evaluator.perturb import Perturbation
from evaluator.predict import Predictor
from evaluator.qc.assess import QualityControl, predict_with_qc
from evaluator.qc.findings import named_bones
from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.metrics import dice_from_counts
from handseg.inference.phase_timer import PhaseTimer
from handseg.runtime.errors import DataFormatError

LOW, HIGH = 0.90, 0.93
WORST_TIE = 1e-3  # bones whose true Dice is within this of the lowest are all "the worst" (a missing bone's Dice
# is 1e-4 / |G|, a misplaced one's 1e-4 / (|P| + |G|): both nothing)
LABELLED_SETS = ("test", "perturbed")  # the targets' sets
HARSH = "harsh"  # the test images under the fit's harsher perturbations: more images of low Dice to measure on


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = 0.5 * (start + end - 1) + 1.0
            start = end
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two equally long sequences (NaN for fewer than 3 values or no spread)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class LabelledImage:
    """One image of a set: where it is, its labels, an optional perturbation, and the bones a failure case
    concerns."""

    set: str
    name: str
    image_path: Path
    label_path: Path
    perturbation: Perturbation | None = None
    seed: int = 0
    case_bones: list[str] = field(default_factory=list)


@dataclass
class QCRecord:
    """What QC said about one labelled image and what is true."""

    set: str
    name: str
    true_dice: float
    bone_true: list[float]
    predicted_dice: float | None
    flag: bool
    reason: str
    named: list[str]
    case_bones: list[str]


def test_images(data_root: Path, labels: Path, set_name: str = "test") -> list[LabelledImage]:
    """The test split's images with their labels under ``labels/outputs_json`` (a missing label is an error)."""
    out = []
    for sample in index_split(data_root, "test"):
        label = labels / "outputs_json" / Path(sample.rel).with_suffix(".json")
        if not label.is_file():
            raise DataFormatError(label, f"no label for {sample.rel}")
        out.append(LabelledImage(set_name, sample.rel, sample.image_path, label))
    return out


def failure_images(case_folder: Path) -> list[LabelledImage]:
    """A failure case's images (a folder written by ``scripts/make_failure_cases.py``) with the case's bones."""
    images = test_images(case_folder, case_folder / "test_labels", case_folder.name)
    for item in images:
        record = json.loads(item.label_path.read_text()).get("attributes", {}).get("phantom", {}).get("failure", {})
        item.case_bones = list(record.get("bones", []))
    return images


def perturbed(images: Sequence[LabelledImage], perturbations: Sequence[Perturbation], per_image: int,
              seed: int = 0, set_name: str = "perturbed") -> list[LabelledImage]:
    """Each image under ``per_image`` of ``perturbations``, taken in turn over the images."""
    out = []
    for i, item in enumerate(images):
        for j in range(per_image):
            p = perturbations[(i * per_image + j) % len(perturbations)]
            out.append(LabelledImage(set_name, f"{item.name} {p.kind} {p.strength:g}", item.image_path,
                                     item.label_path, p, seed + i))
    return out


def assess_image(predictor: Predictor, qc: QualityControl, item: LabelledImage) -> QCRecord:
    """Predict one labelled image with QC and compare with its labels."""
    image = read_image(item.image_path)
    polygons = polygons_in_order(read_annotation(item.label_path, image_hw=image.shape, require_all=False))
    if item.perturbation is not None:
        image, polygons = item.perturbation.apply(image, polygons, seed=item.seed)
    masks, result = predict_with_qc(predictor.call, image, qc)
    bone_true = dice_from_counts(masks.counts(ClassMasks.from_polygons(polygons, image.shape)))
    return QCRecord(item.set, item.name, float(bone_true.mean()), [round(float(v), 5) for v in bone_true],
                    result.predicted_dice, result.flag, result.reason, sorted(named_bones(result.findings)),
                    item.case_bones)


def assess_all(predictor: Predictor, qc: QualityControl, items: Sequence[LabelledImage],
               progress: bool = True) -> list[QCRecord]:
    return [assess_image(predictor, qc, item) for item in tqdm(items, desc="qc report", unit="image",
                                                                disable=not progress)]


def assess_all_in_workers(cfg: EvalConfig, file: str, items: Sequence[LabelledImage], workers: int,
                          progress: bool = True) -> list[QCRecord]:
    """:func:`assess_all` with the images shared among ``workers`` processes, each with the config's predictor and
    QC (:func:`evaluator.eval_workers.map_in_workers`; for a CPU)."""
    return list(map_in_workers(_worker_assessor, (cfg, str(file)), [(item,) for item in items], workers,
                               "qc report", "image", progress))


def _worker_assessor(cfg: EvalConfig, file: str):
    """In a worker: :func:`assess_image` through the config's predictor and quality control."""
    from evaluator.predict import load_predictor

    predictor = load_predictor(cfg, file=file, echo=False)
    return lambda item: assess_image(predictor, predictor.qc, item)


def measure_cost(predictor: Predictor, qc: QualityControl, paths: Sequence[Path], repeats: int = 2) -> dict:
    """QC's cost per image, two ways: its own work (the ``qc`` phase of :func:`predict_with_qc`: probe,
    comparisons, signals, model, findings) as a share of the whole inference with QC, and the wall time of the
    inference without and with QC (taken in turn, best of ``repeats`` each: on a busy machine this comparison
    is as noisy as the load)."""
    plain, checked, own = [], [], []
    if paths:  # the first calls of an engine are slower: not part of any figure
        predict_with_qc(predictor.call, read_image(paths[0]), qc)
    for path in paths:
        image = read_image(path)
        best_plain = best_qc = best_own = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            predictor.masks(image)
            t1 = time.perf_counter()
            timer = PhaseTimer(predictor.call.device)
            predict_with_qc(predictor.call, image, qc, timer)
            t2 = time.perf_counter()
            best_plain, best_qc = min(best_plain, t1 - t0), min(best_qc, t2 - t1)
            best_own = min(best_own, timer.seconds.get("qc", 0.0) / (t2 - t1))
        plain.append(best_plain)
        checked.append(best_qc)
        own.append(best_own)
    ms_plain, ms_qc = 1000 * float(np.mean(plain)), 1000 * float(np.mean(checked))
    return {"images": len(paths), "own_share": round(float(np.mean(own)), 4),
            "own_ms": round(float(np.mean(own)) * ms_qc, 1), "ms_without": round(ms_plain, 1),
            "ms_with": round(ms_qc, 1), "added": round(ms_qc / ms_plain - 1.0, 4)}


def _worst_named(records: Sequence[QCRecord]) -> float | None:
    flagged = [r for r in records if r.flag]
    if not flagged:
        return None
    hits = 0
    for r in flagged:
        true = np.asarray(r.bone_true)
        worst = {CLASSES[c] for c in np.flatnonzero(true <= true.min() + WORST_TIE)}
        hits += bool(worst & set(r.named))
    return hits / len(flagged)


def measures(records: Sequence[QCRecord]) -> dict:
    """Spearman of predicted and true Dice, the shares flagged below :data:`LOW` and from :data:`HIGH` up, and how
    often a flagged reason names the worst bone, over ``records``."""
    true = np.array([r.true_dice for r in records])
    pred = np.array([np.nan if r.predicted_dice is None else r.predicted_dice for r in records])
    flags = np.array([r.flag for r in records], dtype=bool)
    low, high, valid = true < LOW, true >= HIGH, ~np.isnan(pred)
    return {"n_labelled": len(records),
            "spearman": spearman(pred[valid], true[valid]) if valid.any() else float("nan"),
            "n_low": int(low.sum()), "flagged_low": float(flags[low].mean()) if low.any() else float("nan"),
            "n_high": int(high.sum()), "flagged_high": float(flags[high].mean()) if high.any() else float("nan"),
            "n_flagged": int(flags.sum()), "worst_named": _worst_named(records)}


def summarize(records: Sequence[QCRecord], cost: dict | None = None) -> dict:
    """The report's measures (module docstring) from its records: on the test split and its perturbed copies (the
    targets' sets), on those and the harsher copies, per failure case, and over every flagged image."""
    labelled = [r for r in records if r.set in LABELLED_SETS]
    cases = {}
    for name in dict.fromkeys(r.set for r in records if r.set not in LABELLED_SETS + (HARSH,)):
        mine = [r for r in records if r.set == name]
        cases[name] = {"images": len(mine), "flag_rate": float(np.mean([r.flag for r in mine])),
                       "names_case_bones": float(np.mean([r.flag and bool(set(r.named) & set(r.case_bones))
                                                          for r in mine])),
                       "mean_true_dice": float(np.mean([r.true_dice for r in mine]))}
    failure = [r for r in records if r.set in cases]
    harsh = [r for r in records if r.set == HARSH]
    return {
        **measures(labelled),
        "with_harsh": measures(labelled + harsh) if harsh else None,
        "worst_named_all": _worst_named(list(records)),
        "failure_flag_rate": float(np.mean([r.flag for r in failure])) if failure else float("nan"),
        "cases": cases,
        "sets": {s: {"images": int(sum(r.set == s for r in records)),
                     "mean_true_dice": float(np.mean([r.true_dice for r in records if r.set == s] or [np.nan]))}
                 for s in LABELLED_SETS + (HARSH,)},
        "cost": cost,
    }


def result_json(records: Sequence[QCRecord], summary: dict, settings: dict) -> str:
    return json.dumps({"settings": settings, "summary": summary, "images": [asdict(r) for r in records]},
                      indent=1, default=lambda v: None) + "\n"
