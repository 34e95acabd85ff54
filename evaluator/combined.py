"""Combined perturbations for the robustness report: every photometric kind at once, alone or with rotation, zoom
and translation, at strengths drawn at random within ranges (seeded).

X-rays from another hospital differ in exposure, look-up table, sharpness, noise and compression all at once,
and the hand lies differently; one kind at a time misses how the changes add up. A :class:`Combination` holds
one strength per kind (units of :data:`evaluator.perturb.UNITS`) and applies them in a fixed order: the geometric
kinds as one affine matrix (zoom and rotation about the centre, then the translation; one interpolation, the
polygons moved by the same matrix), then sharpness (``blur``), the look-up table (``gamma``, ``contrast``,
``brightness``), ``noise`` and last ``jpeg``, as an image passes detector, scanner software and storage.

:func:`draw_combination` draws one from ``ranges`` (kind -> [low, high]): gamma and zoom log-uniformly (0.6 and
1/0.6 are as likely), JPEG quality as an integer, the rest uniformly. :func:`draw_rows` gives every report row its
draws, one per image, each from its own generator seeded by (seed, family, row, image): a row is a set of
different conditions, not one condition repeated, and adding images or rows leaves the others' draws unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from evaluator.perturb import (
    GEOMETRIC_KINDS,
    MATRICES,
    PHOTOMETRIC,
    PHOTOMETRIC_KINDS,
    add_noise,
    check_strength,
    warp_image,
    warp_polygons,
)

FAMILIES = ("photometric", "photometric+geometric")
APPLY_ORDER = ("blur", "gamma", "contrast", "brightness", "noise", "jpeg")  # photometric kinds, in this order
LOG_UNIFORM = ("gamma", "zoom")
assert set(APPLY_ORDER) == set(PHOTOMETRIC_KINDS)


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])


def geometric_matrix(hw: Sequence[int], strengths: Mapping[str, float]) -> np.ndarray:
    """(2, 3) float64 affine matrix of the geometric kinds in ``strengths``: zoom, then rotation (both about the
    image centre), then translation; kinds left out do nothing."""
    total = np.eye(3)
    for kind in ("zoom", "rotation", "translation"):
        if kind in strengths:
            total = _homogeneous(MATRICES[kind](hw, float(strengths[kind]))) @ total
    return total[:2]


@dataclass(frozen=True)
class Combination:
    """One strength per kind, as ``(kind, strength)`` pairs; applied in the order of the module docstring."""

    strengths: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        for kind, strength in self.strengths:
            check_strength(kind, strength)

    @property
    def as_dict(self) -> dict[str, float]:
        return dict(self.strengths)

    @property
    def geometric(self) -> bool:
        """Whether it moves the labels (any geometric kind)."""
        return any(kind in GEOMETRIC_KINDS for kind, _ in self.strengths)

    def apply(self, image: np.ndarray, polygons: Sequence[np.ndarray],
              seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
        """The perturbed (H, W) uint8 image and its polygons (moved and clipped by the geometric kinds, else
        unchanged); ``seed`` seeds the noise."""
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
        strengths = self.as_dict
        polygons = list(polygons)
        if self.geometric:
            matrix = geometric_matrix(image.shape, strengths)
            image, polygons = warp_image(image, matrix), warp_polygons(polygons, matrix, image.shape)
        for kind in APPLY_ORDER:
            if kind in strengths:
                value = strengths[kind]
                image = add_noise(image, value, seed) if kind == "noise" else PHOTOMETRIC[kind](image, value)
        return image, polygons


def draw_strength(kind: str, low: float, high: float, rng: np.random.Generator) -> float:
    """One strength of ``kind`` in [low, high]: log-uniform for gamma and zoom, an integer for JPEG quality,
    uniform otherwise."""
    if kind in LOG_UNIFORM:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    if kind == "jpeg":
        return float(rng.integers(int(low), int(high) + 1))
    return float(rng.uniform(low, high))


def draw_combination(ranges: Mapping[str, Sequence[float]], kinds: Sequence[str],
                     rng: np.random.Generator) -> Combination:
    """A :class:`Combination` of ``kinds`` (those of them in ``ranges``), each drawn within its range."""
    return Combination(tuple((k, draw_strength(k, *ranges[k], rng)) for k in kinds if k in ranges))


@dataclass(frozen=True)
class CombinedRow:
    """One row of the report: ``family`` (:data:`FAMILIES`), its number ``draw`` (0-based) and one
    :class:`Combination` per image, with the noise seed of each."""

    family: str
    draw: int
    combinations: tuple[Combination, ...]
    seeds: tuple[int, ...]


def draw_rows(ranges: Mapping[str, Sequence[float]], draws: Mapping[str, int], n_images: int,
              seed: int = 0) -> list[CombinedRow]:
    """The combined rows: ``draws[family]`` rows per family, each with one combination per image drawn from a
    generator seeded by (seed, family, row, image). The photometric family combines every photometric kind in
    ``ranges``, the other adds the geometric ones."""
    rows = []
    for f, family in enumerate(FAMILIES):
        kinds = [k for k in GEOMETRIC_KINDS if family != "photometric"] + list(APPLY_ORDER)
        for d in range(draws.get(family, 0)):
            rngs = [np.random.default_rng([seed, f, d, i]) for i in range(n_images)]
            combos = tuple(draw_combination(ranges, kinds, rng) for rng in rngs)
            seeds = tuple(int(rng.integers(0, 2**31 - 1)) for rng in rngs)
            rows.append(CombinedRow(family, d, combos, seeds))
    return rows
