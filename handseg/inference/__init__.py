"""The one inference path every caller shares (training's validation, the evaluator, tuning, robustness,
``predict.py``, the benchmarks): an engine (``engine``), how to run it and one call's set-up (``settings``), the
whole image resized or native tiles (``pipeline``, ``tiling``, ``tiled``; a cascade's stage 2 only near the bones
its stage 1 finds: ``tile_selection``), blending and thresholds inside each class's box (``box_blend``,
``bilinear``), post-processing (``postprocess``), hand normalisation (``hand_norm``), per-phase timing
(``phase_timer``) and Dice of an engine on annotated images (``scoring``).

May import: ``handseg.runtime``, ``handseg.format``, ``handseg.data``, ``handseg.model``.
"""

from handseg.inference.engine import Engine, eager_engine
from handseg.inference.pipeline import predict_masks, predict_probs
from handseg.inference.settings import InferenceCall, InferenceSettings, inference_settings

__all__ = ["Engine", "InferenceCall", "InferenceSettings", "eager_engine", "inference_settings", "predict_masks",
           "predict_probs"]
