"""Per-image intensity standardisation: part of how a model sees an image (:class:`handseg.model.io.InputSpec`).

X-rays from another scanner differ in exposure, look-up table (gamma, contrast, brightness), sharpness, noise and
compression all at once. A fixed ``/ 255`` passes a change of gamma or contrast to the network unchanged; a map
fitted to each image's own grey levels takes most of it out before the network sees it (nnU-Net z-scores every
non-CT image by its own statistics). :class:`Intensity` names the method:

* ``none``: ``I / 255`` (checkpoints from before the standardisation existed load with it);
* ``percentile``: the grey levels between the ``low`` and ``high`` percentiles stretched to [0, 1], clipped outside
  (linear changes of exposure and contrast cancel);
* ``zscore``: clipped to the same percentiles, then ``(I - mean) / std`` of the clipped levels, placed at
  ImageNet's grey mean and spread, so that after the input spec's mean/std the network sees about z;
* ``equalize``: each grey level to the fraction of pixels at or below it (global histogram equalisation: any
  monotonic change of the look-up table, gamma included, cancels up to rounding and clipping);
* ``clahe``: OpenCV's contrast-limited adaptive histogram equalisation (``clip_limit``, ``grid`` x ``grid`` tiles
  over the image), a local contrast normalisation, then ``/ 255``.

Statistics come from the **whole** image the model's pass sees (stage 1: the image resized to its side; stage 2:
the whole native image, before tiling or cropping), area-downsampled to at most :data:`STATS_SIDE` pixels (cheap
on a 2048x2048 image, and pixel noise averages out), over the pixels above 0: pure black is what rotation, zoom
out and padding fill in, and leaving it out keeps the map of a rotated image that of the upright one. With
``region: foreground`` only the hand counts: the grey levels above the histogram's Otsu threshold (soft tissue and
bone are brighter than the open field), so that the open field, most of an X-ray's pixels, neither takes most of
an equalised range nor sets the spread.
:func:`intensity_map` fits the map to a whole image once; every crop or tile of that image is then converted
with its lookup table (:func:`handseg.model.io.to_pixel_values`), in training and at inference alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import cv2
import numpy as np

from handseg.runtime.config_schema import FieldError

METHODS = ("none", "percentile", "zscore", "equalize", "clahe")
STATS_SIDE = 512  # statistics from the whole image area-downsampled to at most this side
GREY_MEAN = 0.449  # ImageNet's mean and std averaged over the three channels: zscore's z = 0 and z = 1 land
GREY_STD = 0.226  # where an ImageNet-normalised grey image has them


@dataclass(frozen=True)
class Intensity:
    """How grey levels are standardised per image before the input spec's mean/std (module docstring).
    ``low``/``high``: percentiles (0-100) for ``percentile`` and ``zscore``; ``region``: the statistics' pixels
    (``image``: all above 0, ``foreground``: the hand); ``clip_limit`` and ``grid`` for ``clahe``."""

    method: Literal["none", "percentile", "zscore", "equalize", "clahe"] = "none"
    low: float = 0.5
    high: float = 99.5
    region: Literal["image", "foreground"] = "image"
    clip_limit: float = 2.0
    grid: int = 8

    def check(self) -> None:
        if self.method not in METHODS:
            raise FieldError("method", f"must be one of {list(METHODS)}, got {self.method!r}")
        if self.region not in ("image", "foreground"):
            raise FieldError("region", f"must be 'image' or 'foreground', got {self.region!r}")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise FieldError("low", f"need 0 <= low < high <= 100, got low {self.low}, high {self.high}")
        if not self.clip_limit > 0:
            raise FieldError("clip_limit", f"must be positive, got {self.clip_limit}")
        if not 1 <= self.grid <= 64:
            raise FieldError("grid", f"must be in 1..64, got {self.grid}")

    @property
    def per_image(self) -> bool:
        """Whether the map depends on the image (every method but ``none``)."""
        return self.method != "none"

    @classmethod
    def from_dict(cls, data: dict | None) -> "Intensity":
        """From its JSON form (None or missing: ``none``, the behaviour before the standardisation), checked."""
        spec = cls(**(data or {}))
        spec.check()
        return spec


class IntensityMap(NamedTuple):
    """A whole image ready to be cut into model inputs: ``image`` (H, W) uint8 (the input itself, or its CLAHE)
    and ``lut`` (256,) float32, the unit-scale value of each grey level (None: ``/ 255``)."""

    image: np.ndarray
    lut: np.ndarray | None


def stats_histogram(image: np.ndarray) -> np.ndarray:
    """(256,) float64 histogram of a (H, W) uint8 image area-downsampled to at most :data:`STATS_SIDE` on its
    longer side, with grey level 0 (fill) left out."""
    h, w = image.shape
    scale = STATS_SIDE / max(h, w)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    hist = cv2.calcHist([np.ascontiguousarray(image)], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    hist[0] = 0.0
    return hist


def foreground(hist: np.ndarray) -> np.ndarray:
    """The histogram's part above its Otsu threshold (the level that best splits it into two classes by
    between-class variance): the hand. An image with one grey level keeps it."""
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)
    m0 = np.cumsum(hist * levels)
    total, mean = w0[-1], m0[-1]
    w1 = total - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean * w0 - total * m0) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1.0
    if between.max() <= 0:
        return hist
    out = hist.copy()
    out[: int(np.argmax(between)) + 1] = 0.0
    return out


def _percentiles(hist: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles (grey levels) of a histogram: the first level whose cumulative share
    reaches them."""
    cdf = np.cumsum(hist) / hist.sum()
    lo = float(np.searchsorted(cdf, low / 100.0, side="left"))
    hi = float(np.searchsorted(cdf, high / 100.0, side="left"))
    return min(lo, 255.0), min(hi, 255.0)


def fit_lut(hist: np.ndarray, intensity: Intensity) -> np.ndarray | None:
    """(256,) float32 lookup table of a global method fitted to ``hist`` (None for ``none`` and ``clahe``, or for
    an image without a pixel above 0: ``/ 255``)."""
    if intensity.method in ("none", "clahe") or hist.sum() <= 0:
        return None
    levels = np.arange(256, dtype=np.float64)
    if intensity.method == "equalize":
        cdf = np.cumsum(hist) / hist.sum()
        lut = cdf - 0.5 * hist / hist.sum()  # the mid-rank of each level: a constant image maps to 0.5
        lut[0] = 0.0
        return lut.astype(np.float32)
    lo, hi = _percentiles(hist, intensity.low, intensity.high)
    if intensity.method == "percentile":
        return np.clip((levels - lo) / max(hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    clipped = np.clip(levels, lo, hi)
    mean = float((hist * clipped).sum() / hist.sum())
    std = float(np.sqrt((hist * (clipped - mean) ** 2).sum() / hist.sum()))
    return (GREY_MEAN + GREY_STD * (clipped - mean) / max(std, 1.0)).astype(np.float32)


def intensity_map(image: np.ndarray, intensity: Intensity) -> IntensityMap:
    """Fit the standardisation to a whole (H, W) uint8 image (see the module docstring): the image to cut model
    inputs from and its lookup table. ``none`` returns the image itself and no table, at no cost."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
    if not intensity.per_image:
        return IntensityMap(image, None)
    if intensity.method == "clahe":
        clahe = cv2.createCLAHE(clipLimit=float(intensity.clip_limit), tileGridSize=(intensity.grid, intensity.grid))
        return IntensityMap(clahe.apply(np.ascontiguousarray(image)), None)
    hist = stats_histogram(image)
    return IntensityMap(image, fit_lut(foreground(hist) if intensity.region == "foreground" else hist, intensity))
