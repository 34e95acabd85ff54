"""Controlled perturbations of an X-ray and its bone polygons, for the robustness report.

Geometric kinds move the image and its labels together with one 2x3 affine matrix:

* ``rotation``: degrees about the image centre, positive counter-clockwise as seen on screen (OpenCV's sign);
* ``zoom``: scale factor about the image centre, > 1 magnifies (the borders are cropped), < 1 shrinks;
* ``translation``: the content moves right by ``fraction`` of the width and down by ``fraction`` of the height.

The image is warped with ``cv2.warpAffine`` (bilinear, black outside the original frame). Coordinates follow
:mod:`handseg.format.rasterize`: an integer vertex (x, y) is the centre of pixel column x, row y, which is also the
point ``warpAffine`` maps for pixel (x, y), so the same matrix applied to the vertices moves the labels exactly
as the pixels move. Warped polygons are clipped to the frame ``[0, W - 1] x [0, H - 1]``; a polygon clipped
away (fewer than 3 points left) becomes an empty (0, 2) array, i.e. an empty class.

Photometric kinds change grey levels only and leave the polygons as they are:

* ``gamma``: ``255 * (I / 255) ** gamma`` (< 1 brightens, > 1 darkens);
* ``contrast``: ``mean + factor * (I - mean)`` about the image's own mean grey level, so the overall
  brightness stays and only the spread changes (< 1 flatter, > 1 harsher);
* ``brightness``: ``I + shift``, ``shift`` in grey levels (0-255 scale; > 0 brighter);
* ``noise``: additive Gaussian noise, ``sigma`` in grey levels (0-255 scale), from a seeded generator;
* ``blur``: Gaussian blur, ``sigma`` in pixels;
* ``jpeg``: a JPEG round trip at ``quality`` 1-100.

Every result is rounded and clipped back to (H, W) uint8. :class:`Perturbation` names one kind and strength
and applies it to an image and its polygons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from handseg.format.geometry import clip_polygon

GEOMETRIC_KINDS = ("rotation", "zoom", "translation")
PHOTOMETRIC_KINDS = ("gamma", "contrast", "brightness", "noise", "blur", "jpeg")
KINDS = GEOMETRIC_KINDS + PHOTOMETRIC_KINDS

# What a strength means, per kind (for tables and chart axes).
UNITS = {
    "rotation": "degrees, + counter-clockwise",
    "zoom": "scale factor, > 1 magnifies",
    "translation": "fraction of the side",
    "gamma": "exponent, < 1 brightens",
    "contrast": "factor about the mean",
    "brightness": "shift, grey levels (0-255 scale)",
    "noise": "sigma, grey levels (0-255 scale)",
    "blur": "sigma, pixels",
    "jpeg": "quality, 1-100",
}

# The strength that leaves image and labels unchanged, where there is one (a JPEG round trip always changes pixels).
IDENTITY = {"rotation": 0.0, "zoom": 1.0, "translation": 0.0, "gamma": 1.0, "contrast": 1.0, "brightness": 0.0,
            "noise": 0.0, "blur": 0.0}


def _centre(hw: Sequence[int]) -> tuple[float, float]:
    """(x, y) of the image centre in pixel-centre coordinates: ((W - 1) / 2, (H - 1) / 2)."""
    return (int(hw[1]) - 1) / 2.0, (int(hw[0]) - 1) / 2.0


def rotation_matrix(hw: Sequence[int], degrees: float) -> np.ndarray:
    """(2, 3) float64 affine matrix rotating an image of size ``hw`` (height, width) by ``degrees`` about its
    centre, counter-clockwise on screen for positive angles."""
    return cv2.getRotationMatrix2D(_centre(hw), float(degrees), 1.0)


def zoom_matrix(hw: Sequence[int], factor: float) -> np.ndarray:
    """(2, 3) float64 affine matrix scaling an image of size ``hw`` by ``factor`` about its centre (> 1 magnifies)."""
    return cv2.getRotationMatrix2D(_centre(hw), 0.0, float(factor))


def translation_matrix(hw: Sequence[int], fraction: float) -> np.ndarray:
    """(2, 3) float64 affine matrix moving the content right by ``fraction`` x width and down by ``fraction`` x
    height (negative: left and up)."""
    h, w = int(hw[0]), int(hw[1])
    return np.array([[1.0, 0.0, fraction * w], [0.0, 1.0, fraction * h]])


MATRICES: dict[str, Callable[[Sequence[int], float], np.ndarray]] = {
    "rotation": rotation_matrix,
    "zoom": zoom_matrix,
    "translation": translation_matrix,
}


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(H, W) uint8 image warped by the (2, 3) ``matrix`` (source -> destination pixel coordinates): bilinear,
    same size, black where the destination pixel comes from outside the source."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_polygons(polygons: Sequence[np.ndarray], matrix: np.ndarray, hw: Sequence[int]) -> list[np.ndarray]:
    """Polygons (each (N, 2) (x, y) in pixel-centre coordinates) mapped by the (2, 3) ``matrix`` and clipped to
    the ``hw`` (height, width) frame ``[0, W - 1] x [0, H - 1]``.

    Returns:
        one (M, 2) float64 array per input polygon, in the same order; (0, 2) where fewer than 3 points remain
        (an input with fewer than 3 points, or a polygon moved out of the frame): an empty class.
    """
    m = np.asarray(matrix, dtype=np.float64)
    hi = (float(hw[1]) - 1.0, float(hw[0]) - 1.0)
    out = []
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        clipped = clip_polygon(pts @ m[:, :2].T + m[:, 2], 0.0, hi) if len(pts) >= 3 else pts
        out.append(clipped if len(clipped) >= 3 else np.zeros((0, 2), dtype=np.float64))
    return out


def adjust_gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """(H, W) uint8 ``255 * (image / 255) ** gamma``, rounded (a lookup table); 1 is the identity."""
    lut = np.rint(255.0 * (np.arange(256) / 255.0) ** float(gamma)).astype(np.uint8)
    return lut[image]


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """(H, W) uint8 ``mean + factor * (image - mean)`` about the image's mean grey level, rounded and clipped;
    1 is the identity, 0 a flat grey image."""
    mean = float(image.mean())
    return np.clip(np.rint(mean + float(factor) * (image.astype(np.float64) - mean)), 0, 255).astype(np.uint8)


def adjust_brightness(image: np.ndarray, shift: float) -> np.ndarray:
    """(H, W) uint8 ``image + shift`` grey levels, rounded (a lookup table) and clipped; 0 is the identity."""
    lut = np.clip(np.rint(np.arange(256) + float(shift)), 0, 255).astype(np.uint8)
    return lut[image]


def add_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 image plus Gaussian noise of standard deviation ``sigma`` grey levels, rounded and clipped;
    the same ``seed`` gives the same noise."""
    noise = np.random.default_rng(seed).normal(0.0, float(sigma), image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) uint8 image blurred by a Gaussian of ``sigma`` pixels (kernel about 6 sigma wide, mirrored
    border); 0 is the identity."""
    if sigma == 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def jpeg(image: np.ndarray, quality: float) -> np.ndarray:
    """(H, W) uint8 image after encoding as JPEG at ``quality`` (1-100) and decoding again."""
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed at quality {quality}")
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)


PHOTOMETRIC: dict[str, Callable[..., np.ndarray]] = {
    "gamma": adjust_gamma,
    "contrast": adjust_contrast,
    "brightness": adjust_brightness,
    "noise": add_noise,  # the only one that takes a seed
    "blur": blur,
    "jpeg": jpeg,
}


def _positive(s: float) -> bool:
    return 0.0 < s < math.inf


def _non_negative(s: float) -> bool:
    return 0.0 <= s < math.inf


# kind -> (is the strength valid, what a valid one is)
_VALID: dict[str, tuple[Callable[[float], bool], str]] = {
    "rotation": (math.isfinite, "a finite angle"),
    "zoom": (_positive, "> 0"),
    "translation": (lambda s: -1.0 < s < 1.0, "in (-1, 1)"),
    "gamma": (_positive, "> 0"),
    "contrast": (_non_negative, ">= 0"),
    "brightness": (lambda s: -255.0 <= s <= 255.0, "in [-255, 255]"),
    "noise": (_non_negative, ">= 0"),
    "blur": (_non_negative, ">= 0"),
    "jpeg": (lambda s: 1 <= s <= 100 and s == int(s), "an integer 1-100"),
}


def check_strength(kind: str, strength: float) -> None:
    """Raise ``ValueError("<kind>: ...")`` when the kind is unknown or ``strength`` is out of its range."""
    if kind not in _VALID:
        raise ValueError(f"{kind}: unknown perturbation (known: {', '.join(KINDS)})")
    valid, allowed = _VALID[kind]
    if not valid(float(strength)):
        raise ValueError(f"{kind}: strength must be {allowed}, got {strength}")


@dataclass(frozen=True)
class Perturbation:
    """One kind (see :data:`KINDS`) at one strength (unit in :data:`UNITS`)."""

    kind: str
    strength: float

    def __post_init__(self) -> None:
        check_strength(self.kind, self.strength)

    @property
    def geometric(self) -> bool:
        """Whether it moves the labels (rotation, zoom, translation)."""
        return self.kind in GEOMETRIC_KINDS

    def apply(self, image: np.ndarray, polygons: Sequence[np.ndarray],
              seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
        """The perturbed (H, W) uint8 image and its polygons (one (N, 2) array per class, same order).

        Geometric kinds return float64 polygons warped and clipped to the frame (see :func:`warp_polygons`);
        photometric kinds return the polygons unchanged. ``seed`` only matters for ``noise``.
        """
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
        if self.geometric:
            matrix = MATRICES[self.kind](image.shape, self.strength)
            return warp_image(image, matrix), warp_polygons(polygons, matrix, image.shape)
        if self.kind == "noise":
            return add_noise(image, self.strength, seed), list(polygons)
        return PHOTOMETRIC[self.kind](image, self.strength), list(polygons)
