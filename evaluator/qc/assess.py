"""Quality control of one prediction: masks, signals, predicted Dice, flag and reason, in one inference pass.

:func:`predict_with_qc` runs the one inference path (:mod:`handseg.inference.pipeline`) as
:func:`~handseg.inference.pipeline.predict_masks` does and returns the same masks, while a probe counts the
uncertain pixels in every class's box, and the model's outputs (a cascade's stage 1, flip TTA) are compared
with the result; then the anatomy is read off the masks (:mod:`evaluator.qc.signals`), the predicted Dice
comes from the model file and the flag and its reason from :mod:`evaluator.qc.findings`. The model file,
``qc_model.json``, is found beside the evaluation's thresholds file; without it QC still flags what the
anatomy alone shows, without a predicted Dice.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evaluator.qc.findings import Finding, assess_findings, reason_text
from evaluator.qc.model import MODEL_FILE, QCModel, load_qc_model
from evaluator.qc.probes import UncertainCounter, flip_agreement, mask_areas, stage_agreement
from evaluator.qc.signals import ImageSignals, ProbeResults, image_signals
from handseg.format.class_masks import ClassMasks
from handseg.inference.hand_norm import unwarp_masks
from handseg.inference.phase_timer import PhaseTimer, phase
from handseg.inference.pipeline import masks_from_outputs, normalised_outputs
from handseg.inference.settings import InferenceCall

if TYPE_CHECKING:
    from evaluator.config import EvalConfig


@dataclass(frozen=True)
class QCResult:
    """QC of one image: ``predicted_dice`` (None without a model) and ``bone_dice`` (29,), ``flag``, the
    ``findings`` its reason lists, and the ``signals`` they come from."""

    predicted_dice: float | None
    bone_dice: np.ndarray | None
    flag: bool
    findings: list[Finding]
    signals: ImageSignals

    @property
    def reason(self) -> str:
        return reason_text(self.findings)


@dataclass(frozen=True)
class QualityControl:
    """What QC needs besides the prediction: the model file's content (None: no file) and where it was read."""

    model: QCModel | None = None
    source: Path | None = None

    def assess(self, signals: ImageSignals) -> QCResult:
        dice_model = None if self.model is None else self.model.dice
        bone_dice = None if dice_model is None else dice_model.bone_dice(signals)
        flag, findings = assess_findings(signals, bone_dice, dice_model)
        predicted = None if bone_dice is None else float(bone_dice.mean())
        return QCResult(predicted, bone_dice, flag, findings, signals)


def qc_model_path(cfg: "EvalConfig") -> Path | None:
    """``qc_model.json`` beside the config's thresholds file (None where thresholds are numbers)."""
    return Path(cfg.thresholds).with_name(MODEL_FILE) if isinstance(cfg.thresholds, str) else None


def load_quality_control(cfg: "EvalConfig", echo: bool = True) -> QualityControl:
    """The evaluation's QC: its model file when there is one, else a one-line note (on stderr) and QC without a
    predicted Dice."""
    path = qc_model_path(cfg)
    if path is None or not path.is_file():
        if echo:
            where = f"no {path}" if path is not None else "thresholds given as numbers, no model file beside them"
            print(f"qc: {where}; flags from the anatomy only, without a predicted Dice "
                  "(fit one with scripts/fit_qc.py)", file=sys.stderr)
        return QualityControl()
    return QualityControl(load_qc_model(path), path)


def predict_with_qc(call: InferenceCall, image: np.ndarray, qc: QualityControl,
                    timer: PhaseTimer | None = None) -> tuple[ClassMasks, QCResult]:
    """(the masks :func:`~handseg.inference.pipeline.predict_masks` gives, on the CPU; their QC) for one
    (H, W) uint8 image with ``call``'s engine, settings, device, thresholds and post-processing. ``timer`` gets the
    inference's phases and ``qc``: the work QC adds (probe, comparisons, signals, model, findings)."""
    thresholds = call.thresholds
    counter = UncertainCounter(thresholds)

    def probe(c, box, probs):
        with phase(timer, "qc"):
            counter(c, box, probs)

    out, matrix = normalised_outputs(call.engine, image, call.settings, call.device, timer)
    seen = masks_from_outputs(out, thresholds, None, timer, probe=probe)  # in the frame the model saw
    with phase(timer, "qc"):
        probes = ProbeResults(counter.counts, mask_areas(seen), stage_agreement(out, seen, thresholds),
                              flip_agreement(out, thresholds))
    with phase(timer, "threshold"):
        raw = (seen if matrix is None else unwarp_masks(seen, matrix)).to("cpu")
        final = call.postprocess(raw) if call.postprocess is not None else raw
    with phase(timer, "qc"):
        reference = None if qc.model is None else qc.model.reference
        return final, qc.assess(image_signals(final, raw, probes, reference))
