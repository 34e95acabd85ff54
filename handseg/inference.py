"""The one inference path: image -> (29, H, W) sigmoid probabilities at the original size.

Training-time validation, the evaluator, threshold tuning and the benchmarks all call :func:`predict_probs`
with a :class:`handseg.engine.Engine` (eager model, AOTInductor package or Torch-TensorRT program). How the
image is fed is decided by the :class:`~handseg.model_io.InputSpec` the checkpoint was trained with:

* ``resize`` (stage 1): the whole image is resized (``cv2.INTER_AREA``) to ``image_size`` squared, the
  logits are upsampled bilinearly to H x W, then the sigmoid is applied.
* ``tile`` (stage 2): native-resolution tiles of ``tile_size`` with ``overlap`` (a side shorter than a tile
  is padded with black), run in batches; each tile's logits are upsampled to the tile size, passed through
  the sigmoid and blended with Gaussian (or constant) weights. Window placement and weights match MONAI's
  ``sliding_window_inference`` (``mode="gaussian"``), which the tests check to 1e-4.

Only the probability buffer and one weight map are kept at full size: for 2048 x 2048 that is
(29, 2048, 2048) float32 = 486 MB plus 16 MB, whatever the number of tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import cv2
import numpy as np
import torch

from handseg.config_schema import FieldError
from handseg.engine import Engine
from handseg.model_io import InputSpec, to_pixel_values, upsample_logits
from handseg.tiling import constant_importance, gaussian_importance, pad_amounts, tile_windows

_ACC_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class InferenceSettings:
    """How to run an engine over one image: ``batch_size`` tiles per engine call, blending, flip TTA;
    ``accumulate_dtype: float16`` halves the blending buffer on CUDA. Build it with :func:`inference_settings`."""

    input: InputSpec
    batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    flip_tta: bool = False
    accumulate_dtype: Literal["float32", "float16"] = "float32"
    sigma_scale: float = 0.125

    def check(self) -> None:
        if self.batch_size < 1:
            raise FieldError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.blend not in ("gaussian", "constant"):
            raise FieldError("blend", f"must be 'gaussian' or 'constant', got {self.blend!r}")
        if self.accumulate_dtype not in _ACC_DTYPES:
            raise FieldError("accumulate_dtype", f"must be one of {sorted(_ACC_DTYPES)}, got {self.accumulate_dtype!r}")
        if not self.sigma_scale > 0:
            raise FieldError("sigma_scale", f"must be positive, got {self.sigma_scale}")
        self.input.check()


def inference_settings(spec: InputSpec, engine: Engine, batch_size: int = 4, blend: str = "gaussian",
                       flip_tta: bool = False) -> InferenceSettings:
    """The settings for running ``engine`` at the checkpoint's input ``spec``: a compiled engine's static batch
    wins over ``batch_size``; reduced-precision engines on CUDA blend in float16 (half the buffer)."""
    half = str(engine.device).startswith("cuda") and engine.precision != "fp32"
    settings = InferenceSettings(input=spec, batch_size=engine.batch_size or batch_size, blend=blend,
                                 flip_tta=flip_tta, accumulate_dtype="float16" if half else "float32")
    settings.check()
    return settings


def _tile_probs(engine: Engine, tiles: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """Sigmoid probabilities (k, 29, t, t) float32 of a batch of tiles, flip-TTA averaged if asked."""
    size = tuple(tiles.shape[-2:])
    probs = torch.sigmoid(upsample_logits(engine(tiles), size))
    if settings.flip_tta:
        flipped = engine(tiles.flip(-1))
        probs.add_(torch.sigmoid(upsample_logits(flipped, size)).flip(-1)).mul_(0.5)
    return probs


def predict_probs(engine: Engine, image: np.ndarray, settings: InferenceSettings,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Sigmoid probabilities (29, H, W) float32 on ``device`` for a grayscale uint8 image (H, W), at the
    image's original size, by the mode in ``settings.input`` (see the module docstring)."""
    settings.check()
    device = torch.device(device)
    if settings.accumulate_dtype == "float16" and device.type != "cuda":
        raise ValueError("accumulate_dtype float16 is only supported on CUDA devices")
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
    with torch.inference_mode():
        if settings.input.mode == "resize":
            return _predict_resized(engine, image, settings, device)
        return _predict_tiled(engine, image, settings, device)


def _predict_resized(engine: Engine, image: np.ndarray, settings: InferenceSettings,
                     device: torch.device) -> torch.Tensor:
    h, w = image.shape
    side = settings.input.image_size
    small = image if image.shape == (side, side) else cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    x = to_pixel_values(small, settings.input.mean, settings.input.std, device)[None]
    if settings.flip_tta:
        x = torch.cat([x, x.flip(-1)])
    logits = engine(x)
    probs = torch.sigmoid_(upsample_logits(logits[:1], (h, w))[0])
    if settings.flip_tta:
        # Bilinear resizing commutes with a horizontal flip, so flip the small logits, not the big probabilities.
        flipped = torch.sigmoid_(upsample_logits(logits[1:2].flip(-1), (h, w))[0])
        probs.add_(flipped).mul_(0.5)
        del flipped
    return probs


def _predict_tiled(engine: Engine, image: np.ndarray, settings: InferenceSettings,
                   device: torch.device) -> torch.Tensor:
    h, w = image.shape
    tile = settings.input.tile_size
    (top, bottom), (left, right) = pad_amounts(h, tile), pad_amounts(w, tile)
    padded = np.pad(image, ((top, bottom), (left, right))) if top + bottom + left + right else image
    x = to_pixel_values(padded, settings.input.mean, settings.input.std, device)[None]
    ph, pw = padded.shape
    if settings.blend == "gaussian":
        weight = gaussian_importance((tile, tile), settings.sigma_scale, device=device)
    else:
        weight = constant_importance((tile, tile), device=device)

    acc_dtype = _ACC_DTYPES[settings.accumulate_dtype]
    probs = None
    weight_sum = torch.zeros((ph, pw), dtype=acc_dtype, device=device)
    windows = tile_windows(ph, pw, tile, settings.input.overlap)
    for start in range(0, len(windows), settings.batch_size):
        batch = windows[start:start + settings.batch_size]
        tiles = torch.cat([x[:, :, y:y + tile, x0:x0 + tile] for y, x0 in batch])
        tile_probs = _tile_probs(engine, tiles, settings)
        if probs is None:
            probs = torch.zeros((tile_probs.shape[1], ph, pw), dtype=acc_dtype, device=device)
        tile_probs.mul_(weight)
        for j, (y, x0) in enumerate(batch):
            probs[:, y:y + tile, x0:x0 + tile] += tile_probs[j].to(acc_dtype)
            weight_sum[y:y + tile, x0:x0 + tile] += weight.to(acc_dtype)
    assert probs is not None
    probs /= weight_sum
    del weight_sum
    if top + bottom + left + right:
        probs = probs[:, top:top + h, left:left + w]
    return probs.to(torch.float32).contiguous()


def threshold_probs(probs: torch.Tensor, thresholds: float | Sequence[float]) -> torch.Tensor:
    """Binary masks (C, H, W) bool: ``probs > threshold``, one threshold for all classes or one per class."""
    if isinstance(thresholds, (int, float)):
        return probs > float(thresholds)
    t = torch.as_tensor(list(thresholds), dtype=probs.dtype, device=probs.device)
    if t.numel() != probs.shape[0]:
        raise ValueError(f"got {t.numel()} thresholds for {probs.shape[0]} classes")
    return probs > t.view(-1, 1, 1)
