"""The one inference path: image -> the model's logits -> masks (or probabilities) at the original size.

Training-time validation, the evaluator, threshold tuning, prediction and the benchmarks all go through
:func:`run_model` with a :class:`handseg.inference.engine.Engine` (eager model, AOTInductor package or Torch-TensorRT
program). How the image is fed is decided by the :class:`~handseg.model.io.InputSpec` the checkpoint was
trained with:

* ``resize`` (stage 1): the whole image is resized (``cv2.INTER_AREA``) to ``image_size`` squared and
  standardised (:func:`handseg.model.io.model_input`), the logits are upsampled bilinearly to H x W, then the
  sigmoid is applied.
* ``tile`` (stage 2): the input spec's intensity standardisation is fitted to the whole image, which is then cut
  into native-resolution tiles of ``tile_size`` with ``overlap`` (a side shorter than a tile is padded with
  black), as training cuts its crops; run in batches; each tile's logits are upsampled to the tile size, passed
  through the sigmoid and blended with Gaussian (or constant) weights. Window placement and weights match MONAI's
  ``sliding_window_inference`` (``mode="gaussian"``), which the tests check to 1e-4. A cascade's stage 2 runs
  only on the tiles near the bones its stage 1 finds (``settings.selection``,
  :mod:`handseg.inference.tile_selection`); elsewhere the output is stage 1's (:mod:`handseg.inference.tiled`).

How to run is an :class:`~handseg.inference.settings.InferenceSettings`; a mask-predicting call's whole set-up
(engine, settings, device, thresholds, post-processing) is an :class:`~handseg.inference.settings.InferenceCall`.
Two results from the same logits: :func:`predict_masks` thresholds inside each class's candidate box only
(:mod:`handseg.inference.box_blend`: memory and time follow the bones, not the image) and returns
:class:`~handseg.format.class_masks.ClassMasks`; :func:`predict_probs` makes the full (29, H, W) probability map, for
callers that want probabilities (threshold tuning, ensembling). Both compute every pixel with the same
arithmetic, so their masks are identical. With ``hand_norm`` (stored with the tuned thresholds), both first
look at the hand in the whole-image pass and, when its size or angle is far from the validation hands', run on
the image magnified or shrunk to their size and rotated towards their angle, and map the result back
(:mod:`handseg.inference.hand_norm`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from handseg.format.class_masks import ClassMasks
from handseg.inference.box_blend import ModelOutputs, blend_box, candidate_boxes, float32_thresholds
from handseg.inference.engine import Engine
from handseg.inference.hand_norm import (
    hand_angle,
    hand_centre,
    hand_fraction,
    normalising_affine,
    rescale_factor,
    rotation_angle,
    unwarp_masks,
    unwarp_probs,
    warp_image,
)
from handseg.inference.phase_timer import PhaseTimer, phase
from handseg.inference.settings import ACCUMULATE_DTYPES, InferenceCall, InferenceSettings, PostProcess
from handseg.inference.tile_selection import uncovered_rects
from handseg.inference.tiled import dense_probs, rows_of, run_tile_batches, tiles_to_run
from handseg.inference.tiling import constant_importance, gaussian_importance
from handseg.model.io import model_input

DENSE_CHUNK = 2  # classes blended together at full size when their boxes are large (bounds memory)
# (class, box (y0, x0, y1, x1), probabilities (y1 - y0, x1 - x0) float32) -> None: sees each class's probabilities
# before they are thresholded (quality control counts the pixels near the threshold there)
Probe = Callable[[int, tuple[int, int, int, int], torch.Tensor], None]


def _check_inputs(engine: Engine, image: np.ndarray, settings: InferenceSettings, device: torch.device) -> None:
    settings.check()
    if (settings.input.prior is None) != (engine.prior is None):
        raise ValueError("a cascade's stage 2 needs its stage-1 engine (engine.prior) and the prior's input spec")
    if settings.input.prior is not None and settings.input.mode != "tile":
        raise ValueError("a cascade's stage 2 runs on tiles")
    if settings.accumulate_dtype == "float16" and device.type != "cuda":
        raise ValueError("accumulate_dtype float16 is only supported on CUDA devices")
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")


def run_model(engine: Engine, image: np.ndarray, settings: InferenceSettings, device: str | torch.device = "cpu",
              timer: PhaseTimer | None = None, first_pass: torch.Tensor | None = None) -> ModelOutputs:
    """The engine's logits for a grayscale uint8 image (H, W), by the mode in ``settings.input`` (see the module
    docstring); only low-resolution logits are kept, with where each lands at full size. ``timer`` collects the
    ``preprocess`` and ``engine`` phases; ``first_pass``: :func:`whole_image_logits` of this image, if already
    computed (not computed again). Hand normalisation is :func:`predict_masks`'s and :func:`predict_probs`'s."""
    device = torch.device(device)
    _check_inputs(engine, image, settings, device)
    first_pass = None if first_pass is None else first_pass[None]
    with torch.inference_mode():
        if settings.input.mode == "resize":
            return _run_resized(engine, image, settings, device, timer, first_pass)
        return _run_tiled(engine, image, settings, device, timer, first_pass)


def whole_image_logits(engine: Engine, image: np.ndarray, settings: InferenceSettings,
                       device: str | torch.device = "cpu", timer: PhaseTimer | None = None) -> torch.Tensor:
    """Logits (C, h', w') of the whole-image pass over ``image`` (H, W) uint8: a resize-mode model's, or a cascade's
    stage 1's; without TTA (what :mod:`handseg.inference.hand_norm` measures the hand on)."""
    device = torch.device(device)
    _check_inputs(engine, image, settings, device)
    if settings.input.prior is not None:
        engine, settings = engine.prior, replace(settings, input=settings.input.prior)
    with torch.inference_mode():
        return _run_resized(engine, image, replace(settings, flip_tta=False), device, timer).logits[0]


def normalised_outputs(engine: Engine, image: np.ndarray, settings: InferenceSettings, device: str | torch.device,
                       timer: PhaseTimer | None) -> tuple[ModelOutputs, np.ndarray | None]:
    """The model's outputs over ``image`` and None or, when ``settings.hand_norm`` finds the hand far from the
    reference size or angle, over the image normalised by the returned (2, 3) affine matrix."""
    if settings.hand_norm is None:
        return run_model(engine, image, settings, device, timer), None
    first = whole_image_logits(engine, image, settings, device, timer)
    factor = rescale_factor(hand_fraction(first), settings.hand_norm)
    degrees = rotation_angle(hand_angle(first, image.shape), settings.hand_norm)
    if factor == 1.0 and degrees == 0.0:
        return run_model(engine, image, settings, device, timer, first_pass=first), None
    matrix = normalising_affine(image.shape, factor, hand_centre(first), degrees)
    with phase(timer, "preprocess"):
        warped = warp_image(image, matrix)
    return run_model(engine, warped, settings, device, timer), matrix


def _run_resized(engine: Engine, image: np.ndarray, settings: InferenceSettings, device: torch.device,
                 timer: PhaseTimer | None, first_pass: torch.Tensor | None = None) -> ModelOutputs:
    """Resize mode (module docstring). With a cascade's prior engine, this is how the prior runs (no TTA).
    ``first_pass``: this image's logits (1, C, h', w') when already computed (used without flip TTA)."""
    h, w = image.shape
    side = settings.input.image_size
    if first_pass is not None and not settings.flip_tta:
        logits = first_pass
    else:
        with phase(timer, "preprocess"):
            small = image if image.shape == (side, side) else cv2.resize(image, (side, side),
                                                                          interpolation=cv2.INTER_AREA)
            x = model_input(small, settings.input, device)[None]
            if settings.flip_tta:
                x = torch.cat([x, x.flip(-1)])
        with phase(timer, "stage1"):
            logits = engine(x)
    # Bilinear resizing commutes with a horizontal flip, so the flipped logits are flipped back at low resolution.
    flipped = logits[1:2].flip(-1) if settings.flip_tta else None
    return ModelOutputs(logits=logits[:1], flipped=flipped, flip_back="grid", windows=[(0, 0)], window_hw=(h, w),
                        image_hw=(h, w), padded_hw=(h, w), pad=(0, 0), weight=None,
                        accumulate=ACCUMULATE_DTYPES[settings.accumulate_dtype])


def _run_tiled(engine: Engine, image: np.ndarray, settings: InferenceSettings, device: torch.device,
               timer: PhaseTimer | None, first_pass: torch.Tensor | None = None) -> ModelOutputs:
    """Tile mode (module docstring, :mod:`handseg.inference.tiled`); a cascade's stage 1 runs first, on the
    whole image (``first_pass``: its logits when already computed)."""
    tile = settings.input.tile_size
    prior = None
    if settings.input.prior is not None:  # a cascade: stage 1 sees the whole image first
        prior_settings = replace(settings, input=settings.input.prior, flip_tta=False)
        prior = _run_resized(engine.prior, image, prior_settings, device, timer, first_pass).logits[0]  # (C, h', w')
    with phase(timer, "preprocess"):
        tiling = tiles_to_run(image, prior, settings)
    windows, run = tiling.windows, tiling.run
    if timer is not None:
        timer.count("tiles_run", len(run))
        timer.count("tiles_possible", len(windows))
    plain, flipped = run_tile_batches(engine, tiling, prior, settings, device, timer)
    if settings.blend == "gaussian":
        weight = gaussian_importance((tile, tile), settings.sigma_scale, device=device)
    else:
        weight = constant_importance((tile, tile), device=device)
    skipped = len(run) < len(windows)
    rows = rows_of(run, len(windows))
    return ModelOutputs(logits=plain, flipped=flipped, flip_back="output", windows=windows, window_hw=(tile, tile),
                        image_hw=tiling.image_hw, padded_hw=tiling.padded.shape, pad=tiling.pad, weight=weight,
                        accumulate=ACCUMULATE_DTYPES[settings.accumulate_dtype], prior=prior,
                        rows=rows if skipped else None,
                        uncovered=uncovered_rects(windows, [r is not None for r in rows], (tile, tile)) if skipped
                        else [])


def predict_probs(engine: Engine, image: np.ndarray, settings: InferenceSettings,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Sigmoid probabilities (29, H, W) float32 on ``device`` for a grayscale uint8 image (H, W), at the image's
    original size. Builds the full map: prefer :func:`predict_masks` where masks, RLE or counts are wanted."""
    out, matrix = normalised_outputs(engine, image, settings, device, None)
    with torch.inference_mode():
        probs = dense_probs(out, settings.batch_size)
    return probs if matrix is None else unwarp_probs(probs, matrix)


def masks_from_outputs(out: ModelOutputs, thresholds: float | Sequence[float],
                       postprocess: PostProcess | None = None, timer: PhaseTimer | None = None,
                       probe: Probe | None = None) -> ClassMasks:
    """Per-class masks ``probability > threshold`` computed inside each class's candidate box only (equal to
    thresholding :func:`dense_probs`), then ``postprocess`` (e.g.
    :class:`handseg.inference.postprocess.PostProcessing`). Classes whose box covers more than a quarter of the
    image (a model that predicts everywhere) are blended at full size, :data:`DENSE_CHUNK` at a time: the same
    pixels, at the full path's speed. ``probe`` (:data:`Probe`) sees every box's probabilities first."""
    n_classes = out.logits.shape[1]
    h, w = out.image_hw
    t = float32_thresholds(thresholds, n_classes)
    with phase(timer, "blend"):
        boxes: list = candidate_boxes(out, t)
    masks: list = [None] * n_classes
    large = [c for c, b in enumerate(boxes) if b is not None and 4 * (b[2] - b[0]) * (b[3] - b[1]) > h * w]
    with torch.inference_mode():
        for c, box in enumerate(boxes):
            if box is not None and c not in large:
                with phase(timer, "blend"):
                    boxes[c], probs = blend_box(out, c, box)
                if probe is not None:
                    probe(c, boxes[c], probs)
                with phase(timer, "threshold"):
                    masks[c] = probs > t[c]
        for start in range(0, len(large), DENSE_CHUNK):
            chunk = large[start:start + DENSE_CHUNK]
            with phase(timer, "blend"):
                probs = dense_probs(out.select(chunk), batch_size=1)  # one tile at a time: bounds memory
            with phase(timer, "threshold"):
                for k, c in enumerate(chunk):
                    y0, x0, y1, x1 = boxes[c]
                    if probe is not None:
                        probe(c, boxes[c], probs[k, y0:y1, x0:x1])
                    masks[c] = probs[k, y0:y1, x0:x1] > t[c]
            del probs
    with phase(timer, "threshold"):
        result = ClassMasks(h, w, boxes, masks).tight()
        return postprocess(result) if postprocess is not None else result


def predict_masks(call: InferenceCall, image: np.ndarray, timer: PhaseTimer | None = None) -> ClassMasks:
    """Masks of the 29 classes of a grayscale uint8 image (H, W) at its original size, as
    :class:`~handseg.format.class_masks.ClassMasks` on ``call.device``: ``probability > threshold`` (one threshold or
    one per class), then ``call.postprocess``. Never builds a full-size float map (but for classes predicted nearly
    everywhere, :data:`DENSE_CHUNK` at a time)."""
    out, matrix = normalised_outputs(call.engine, image, call.settings, call.device, timer)
    if matrix is None:
        return masks_from_outputs(out, call.thresholds, call.postprocess, timer)
    masks = masks_from_outputs(out, call.thresholds, None, timer)
    with phase(timer, "threshold"):
        masks = unwarp_masks(masks, matrix)
        return call.postprocess(masks) if call.postprocess is not None else masks


def threshold_probs(probs: torch.Tensor, thresholds: float | Sequence[float]) -> torch.Tensor:
    """Binary masks (C, H, W) bool: ``probs > threshold``, one threshold for all classes or one per class."""
    if isinstance(thresholds, (int, float)):
        return probs > float(thresholds)
    t = torch.as_tensor(list(thresholds), dtype=probs.dtype, device=probs.device)
    if t.numel() != probs.shape[0]:
        raise ValueError(f"got {t.numel()} thresholds for {probs.shape[0]} classes")
    return probs > t.view(-1, 1, 1)
