"""One evaluation's set-up, built once: the config's checkpoint, its engine on the device, the inference settings,
the per-class thresholds and the post-processing (with hand normalisation and tile selection inside the settings).

Validation, submission, robustness, prediction and the quality control's fit all start from :func:`build_context`,
so each resolves the config the same way (:mod:`evaluator.config`'s ``resolve_*`` and :mod:`evaluator.engines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluator.config import EvalConfig, resolve_postprocess, resolve_thresholds
from evaluator.engines import eval_settings, load_engine, load_eval_checkpoint
from handseg.inference.engine import Engine
from handseg.inference.postprocess import PostProcessing
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.checkpoint import LoadedCheckpoint


@dataclass(frozen=True)
class EvalContext:
    """Everything an evaluation runs with: ``engine`` on ``device`` for ``ckpt``, its ``settings``, the 29
    ``thresholds`` and the ``postprocess`` chosen with them (None: none)."""

    cfg: EvalConfig
    ckpt: LoadedCheckpoint
    engine: Engine
    settings: InferenceSettings
    device: str
    thresholds: list[float]
    postprocess: PostProcessing | None

    @property
    def call(self) -> InferenceCall:
        """The inference call of this evaluation (engine, settings, device, thresholds, post-processing)."""
        return InferenceCall(self.engine, self.settings, self.device, self.thresholds, self.postprocess)


def build_context(cfg: EvalConfig, file: str | Path = "<config>", device: str | None = None,
                  echo: bool = True) -> EvalContext:
    """The evaluation context of ``cfg`` (``file``: the config's path, for errors) on ``device`` (default: the
    config's; with several GPU processes, each process's own), printing the checkpoint chosen when ``echo``."""
    device = device or cfg.device
    ckpt = load_eval_checkpoint(cfg, device, file=file, echo=echo)
    engine = load_engine(cfg, ckpt, device=device)
    return EvalContext(cfg, ckpt, engine, eval_settings(cfg, ckpt, engine), device, resolve_thresholds(cfg),
                       resolve_postprocess(cfg))
