"""How to run an engine over one image (:class:`InferenceSettings`), and one mask-predicting call's whole set-up
(:class:`InferenceCall`: engine, settings, device, thresholds, post-processing) that
:func:`handseg.inference.pipeline.predict_masks` and :mod:`handseg.inference.scoring` take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch

from handseg.format.class_masks import ClassMasks
from handseg.inference.engine import Engine
from handseg.inference.hand_norm import HandNorm
from handseg.inference.tile_selection import TileSelection
from handseg.model.io import InputSpec
from handseg.runtime.config_schema import FieldError

ACCUMULATE_DTYPES = {"float32": torch.float32, "float16": torch.float16}  # InferenceSettings.accumulate_dtype
PostProcess = Callable[[ClassMasks], ClassMasks]


@dataclass
class InferenceSettings:
    """How to run an engine over one image: ``batch_size`` tiles per engine call, blending, flip TTA;
    ``accumulate_dtype: float16`` halves the blending buffer on CUDA; ``hand_norm``: hand normalisation, size and
    orientation (:mod:`handseg.inference.hand_norm`; None: off); ``selection``: which tiles a cascade's stage 2
    runs on (:mod:`handseg.inference.tile_selection`; None: every tile). Build it with :func:`inference_settings`."""

    input: InputSpec
    batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    flip_tta: bool = False
    accumulate_dtype: Literal["float32", "float16"] = "float32"
    sigma_scale: float = 0.125
    hand_norm: HandNorm | None = None
    selection: TileSelection | None = TileSelection()

    def check(self) -> None:
        if self.batch_size < 1:
            raise FieldError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.blend not in ("gaussian", "constant"):
            raise FieldError("blend", f"must be 'gaussian' or 'constant', got {self.blend!r}")
        if self.accumulate_dtype not in ACCUMULATE_DTYPES:
            raise FieldError("accumulate_dtype",
                             f"must be one of {sorted(ACCUMULATE_DTYPES)}, got {self.accumulate_dtype!r}")
        if not self.sigma_scale > 0:
            raise FieldError("sigma_scale", f"must be positive, got {self.sigma_scale}")
        if self.hand_norm is not None:
            self.hand_norm.check()
        if self.selection is not None:
            self.selection.check()
        self.input.check()


def inference_settings(spec: InputSpec, engine: Engine, batch_size: int = 4, blend: str = "gaussian",
                       flip_tta: bool = False, hand_norm: HandNorm | None = None) -> InferenceSettings:
    """The settings for running ``engine`` at the checkpoint's input ``spec``: a compiled engine's static batch
    wins over ``batch_size``; reduced-precision engines on CUDA blend in float16 (half the buffer)."""
    half = str(engine.device).startswith("cuda") and engine.precision != "fp32"
    settings = InferenceSettings(input=spec, batch_size=engine.batch_size or batch_size, blend=blend,
                                 flip_tta=flip_tta, accumulate_dtype="float16" if half else "float32",
                                 hand_norm=hand_norm)
    settings.check()
    return settings


@dataclass(frozen=True)
class InferenceCall:
    """What :func:`handseg.inference.pipeline.predict_masks` runs: ``engine`` on ``device`` with ``settings``,
    masks ``probability > threshold`` (``thresholds``: one for all classes or one per class), then ``postprocess``
    (None: none, e.g. :class:`handseg.inference.postprocess.PostProcessing`)."""

    engine: Engine
    settings: InferenceSettings
    device: str | torch.device = "cpu"
    thresholds: float | Sequence[float] = 0.5
    postprocess: PostProcess | None = None
