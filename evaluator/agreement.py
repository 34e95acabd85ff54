"""Agreement of an engine with eager fp32: max abs logit difference and per-class mask Dice on an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image
from handseg.format.classes import CLASSES
from handseg.format.metrics import dice_counts, dice_from_counts
from handseg.inference.pipeline import predict_probs, threshold_probs
from handseg.model.intensity import intensity_map
from handseg.model.io import model_input, to_pixel_values
from handseg.phantom import render_hand
from handseg.runtime.errors import DataFormatError


def sample_image(data_root: str | Path | None, size: int = 256, seed: int = 0) -> tuple[np.ndarray, str]:
    """(H, W) uint8 image to measure agreement on: the first training image under ``data_root``, else a phantom."""
    if data_root is not None and Path(data_root).is_dir():
        try:
            samples = index_split(data_root, "train")
            if samples:
                return read_image(samples[0].image_path), samples[0].rel
        except DataFormatError:
            pass
    image, _ = render_hand(seed, size, "R")
    return image, f"phantom(seed={seed}, size={size})"


def tile_batch(image: np.ndarray, spec, batch: int, side: int) -> torch.Tensor:
    """A (batch, channels, side, side) float32 batch of real tiles from ``image`` (resized when it is smaller);
    a cascade's stage 2 gets its 29 prior channels at probability 0.5 (any input measures the network itself).
    Tiles are normalised one by one, with the intensity standardisation fitted to the whole image (as the
    inference does): no full-size float image is made."""
    h, w = image.shape
    fitted = intensity_map(image, spec.intensity)
    if h < side or w < side or spec.mode == "resize":
        x = model_input(image, spec)[None]  # (1, 3, H, W), standardised as the checkpoint's input spec says
        tiles = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).repeat(batch, 1, 1, 1)
    else:
        ys = np.linspace(0, h - side, batch).round().astype(int)
        xs = np.linspace(0, w - side, batch).round().astype(int)[::-1]
        tiles = torch.stack([to_pixel_values(fitted.image[y:y + side, x0:x0 + side], spec.mean, spec.std,
                                             lut=fitted.lut) for y, x0 in zip(ys, xs)])
    if spec.channels > 3:
        tiles = torch.cat([tiles, tiles.new_full((batch, spec.channels - 3, side, side), 0.5)], dim=1)
    return tiles


def mask_dice(pred: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """(29,) Dice of two (29, H, W) bool masks by the competition rule (both empty -> 1)."""
    return dice_from_counts(dice_counts(pred, ref))


def compare(tested: tuple, reference: tuple, image: np.ndarray, device: str, thresholds=0.5) -> dict:
    """Logit and mask agreement of ``tested`` with ``reference`` (eager fp32) on ``image``, each an (engine, its
    inference settings) pair: the logits of a batch of real tiles, then the probabilities and masks (at
    ``thresholds``) of the whole image through the inference path."""
    (engine, settings), (ref_engine, ref_settings) = tested, reference
    side = engine.side or settings.input.tile_size
    batch = engine.batch_size or settings.batch_size
    x = tile_batch(image, settings.input, batch, side)
    with torch.inference_mode():
        diff_logits = (engine(x).cpu() - ref_engine(x).cpu()).abs().max().item()
    probs = predict_probs(engine, image, settings, device=device).cpu()
    ref_probs = predict_probs(ref_engine, image, ref_settings, device=device).cpu()
    dice = mask_dice(threshold_probs(probs, thresholds), threshold_probs(ref_probs, thresholds))
    return {
        "max_abs_diff_logits": float(diff_logits),
        "max_abs_diff_probs": float((probs - ref_probs).abs().max().item()),
        "mask_dice_per_class": {c: round(float(d), 6) for c, d in zip(CLASSES, dice)},
        "mask_dice_min": float(dice.min()),
        "mask_dice_mean": float(dice.mean()),
        "image_hw": [int(image.shape[0]), int(image.shape[1])],
    }
