"""The one inference path: image -> (29, H, W) sigmoid probabilities at the original size.

Training-time validation, the evaluator, threshold tuning and the benchmarks all call :func:`predict_probs`
with an *engine*: any callable mapping a float32 batch ``(B, 3, h, w)`` to logits ``(B, 29, h', w')`` (an
eager :class:`handseg.models.LogitsModule`, an AOTInductor package, a Torch-TensorRT module). How the image
is fed is decided by the :class:`~handseg.models.InputSpec` the checkpoint was trained with:

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
from typing import Callable, Literal, Sequence

import cv2
import numpy as np
import torch

from handseg.models import InputSpec, input_spec_from_dict, upsample_logits
from handseg.tiling import constant_importance, gaussian_importance, pad_amounts, tile_windows

Engine = Callable[[torch.Tensor], torch.Tensor]
_ACC_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class InferenceSettings:
    """How to run an engine over one image. ``fixed_batch`` pads every tile batch to ``batch_size`` (for
    engines compiled with a static batch); ``accumulate_dtype: float16`` halves the blending buffer on CUDA."""

    input: InputSpec
    batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    flip_tta: bool = False
    fixed_batch: bool = False
    accumulate_dtype: Literal["float32", "float16"] = "float32"
    sigma_scale: float = 0.125

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.blend not in ("gaussian", "constant"):
            raise ValueError(f"blend: must be 'gaussian' or 'constant', got {self.blend!r}")
        if self.accumulate_dtype not in _ACC_DTYPES:
            raise ValueError(f"accumulate_dtype: must be one of {sorted(_ACC_DTYPES)}, got {self.accumulate_dtype!r}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale: must be positive, got {self.sigma_scale}")
        self.input.validate()


def settings_from_info(info: dict, **kwargs) -> InferenceSettings:
    """InferenceSettings for a checkpoint's recorded input spec (``info["input"]``); ``kwargs`` set the rest."""
    settings = InferenceSettings(input=input_spec_from_dict(info["input"]), **kwargs)
    settings.validate()
    return settings


def preprocess(image: np.ndarray, mean: Sequence[float], std: Sequence[float],
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Grayscale uint8 (H, W) -> normalised float32 (1, 3, H, W): /255, replicated to 3 channels, then
    ``(x - mean) / std`` per channel. The uint8 image is moved to ``device`` first (4x less to copy)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.view(1, 1, *x.shape) - m) / s


def _as_tensor(out) -> torch.Tensor:
    """Engines may return a tensor, a one-element list/tuple (AOTInductor) or an HF output with ``logits``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise TypeError(f"engine returned {type(out).__name__}, expected a logits tensor")


def run_engine(engine: Engine, batch: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """Logits (N, 29, h', w') float32 for ``batch`` (N, 3, h, w), in chunks of ``settings.batch_size``; with
    ``fixed_batch`` the last chunk is padded with zeros to the full batch and the padding's output dropped.
    The result is made contiguous: a compiled engine may return channels-last logits, and upsampling those to
    (29, 2048, 2048) keeps that layout, which makes every later per-class step strided and slow."""
    outs = []
    size = settings.batch_size
    for start in range(0, batch.shape[0], size):
        chunk = batch[start:start + size]
        k = chunk.shape[0]
        if settings.fixed_batch and k < size:
            chunk = torch.cat([chunk, chunk.new_zeros((size - k, *chunk.shape[1:]))])
        outs.append(_as_tensor(engine(chunk))[:k].float().contiguous())
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def _tile_probs(engine: Engine, tiles: torch.Tensor, settings: InferenceSettings) -> torch.Tensor:
    """Sigmoid probabilities (k, 29, t, t) float32 of a batch of tiles, flip-TTA averaged if asked."""
    size = tuple(tiles.shape[-2:])
    probs = torch.sigmoid(upsample_logits(run_engine(engine, tiles, settings), size))
    if settings.flip_tta:
        flipped = run_engine(engine, tiles.flip(-1), settings)
        probs.add_(torch.sigmoid(upsample_logits(flipped, size)).flip(-1)).mul_(0.5)
    return probs


def predict_probs(engine: Engine, image: np.ndarray, settings: InferenceSettings,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Sigmoid probabilities (29, H, W) float32 on ``device`` for a grayscale uint8 image (H, W), at the
    image's original size, by the mode in ``settings.input`` (see the module docstring)."""
    settings.validate()
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
    x = preprocess(small, settings.input.mean, settings.input.std, device)
    if settings.flip_tta:
        x = torch.cat([x, x.flip(-1)])
    logits = run_engine(engine, x, settings)
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
    x = preprocess(padded, settings.input.mean, settings.input.std, device)
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
