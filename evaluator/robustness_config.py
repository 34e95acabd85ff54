"""``robustness:`` in the eval YAML: which perturbations the robustness report runs, on how many images, and the
drops of mean Dice that pass. Single kinds at listed strengths (``strengths``), and combined rows
(``combined``: every photometric kind at once, alone or with the geometric kinds, drawn within ``ranges``;
:mod:`evaluator.combined`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluator.combined import FAMILIES
from evaluator.perturb import GEOMETRIC_KINDS, KINDS, PHOTOMETRIC_KINDS, Perturbation, check_strength
from handseg.runtime.config_schema import FieldError


def default_strengths() -> dict[str, list[float]]:
    """Strengths per kind that cover the targets: rotation +-30 degrees, zoom 0.75-1.25, gamma 0.6-1.7,
    brightness +-25 grey levels, noise, blur and JPEG quality down to 30."""
    return {
        "rotation": [-30.0, -15.0, 15.0, 30.0],
        "zoom": [0.75, 0.9, 1.1, 1.25],
        "translation": [0.05, 0.1],
        "gamma": [0.6, 0.8, 1.25, 1.7],
        "contrast": [0.7, 1.3],
        "brightness": [-25.0, 25.0],
        "noise": [5.0, 10.0, 20.0],
        "blur": [1.0, 2.0, 3.0],
        "jpeg": [70.0, 50.0, 30.0],
    }


def default_ranges() -> dict[str, list[float]]:
    """The ranges the combined rows draw from: those of the single-kind strengths (rotation +-30 degrees, zoom
    0.75-1.25, shift +-0.1, gamma 0.6-1.7, contrast 0.7-1.3, brightness +-25, noise up to 20, blur up to 3,
    JPEG quality 30-95)."""
    return {
        "rotation": [-30.0, 30.0],
        "zoom": [0.75, 1.25],
        "translation": [-0.1, 0.1],
        "gamma": [0.6, 1.7],
        "contrast": [0.7, 1.3],
        "brightness": [-25.0, 25.0],
        "noise": [0.0, 20.0],
        "blur": [0.0, 3.0],
        "jpeg": [30.0, 95.0],
    }


@dataclass
class CombinedConfig:
    """Combined rows: ``draws`` rows of every photometric kind at once and ``geometric_draws`` rows that add
    rotation, zoom and translation; each row draws one combination per image (seeded by ``seed``) within
    ``ranges`` (kind -> [low, high]; a kind left out is not drawn). A row passes when its mean drop is within
    its family's tolerance. 0 rows: none."""

    draws: int = 3
    geometric_draws: int = 3
    seed: int = 0
    ranges: dict[str, list[float]] = field(default_factory=default_ranges)
    tolerance_photometric: float = 0.015
    tolerance_geometric: float = 0.02

    def check(self) -> None:
        if self.draws < 0 or self.geometric_draws < 0:
            raise FieldError("draws", "draws and geometric_draws must be >= 0")
        for kind, bounds in self.ranges.items():
            if kind not in KINDS:
                raise FieldError(f"ranges.{kind}", f"unknown perturbation (known: {', '.join(KINDS)})")
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise FieldError(f"ranges.{kind}", f"expected [low, high] with low <= high, got {bounds}")
            for v in bounds:
                try:
                    check_strength(kind, v)
                except ValueError as exc:
                    raise FieldError(f"ranges.{kind}", str(exc).partition(": ")[2] or str(exc)) from None
        if (self.draws or self.geometric_draws) and not any(k in self.ranges for k in PHOTOMETRIC_KINDS):
            raise FieldError("ranges", "name at least one photometric kind to combine")
        if self.geometric_draws and not any(k in self.ranges for k in GEOMETRIC_KINDS):
            raise FieldError("ranges", "geometric_draws need a range for rotation, zoom or translation")
        for name in ("tolerance_photometric", "tolerance_geometric"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FieldError(name, "must be in [0, 1]")

    @property
    def rows(self) -> dict[str, int]:
        """Rows per family (:data:`evaluator.combined.FAMILIES`)."""
        return dict(zip(FAMILIES, (self.draws, self.geometric_draws)))

    def tolerance(self, family: str) -> float:
        """The largest drop of mean Dice that passes for a row of ``family``."""
        return self.tolerance_photometric if family == "photometric" else self.tolerance_geometric


@dataclass
class RobustnessConfig:
    """``robustness:`` in the eval YAML. ``strengths`` maps each kind to run (in that order) to its strengths
    (units in :data:`evaluator.perturb.UNITS`); a kind left out is not run. ``max_images``: only the first N
    validation images (None: all). ``seed`` seeds the noise (image i uses ``seed + i``, the same noise pattern
    at every sigma). A drop of mean Dice up to the tolerance passes. ``combined``: the combined rows."""

    strengths: dict[str, list[float]] = field(default_factory=default_strengths)
    max_images: int | None = None
    seed: int = 0
    tolerance_geometric: float = 0.03
    tolerance_photometric: float = 0.02
    combined: CombinedConfig = field(default_factory=CombinedConfig)

    def check(self) -> None:
        if not self.strengths:
            raise FieldError("strengths", "name at least one perturbation kind")
        for kind, values in self.strengths.items():
            if not values:
                raise FieldError(f"strengths.{kind}", "give at least one strength")
            for v in values:
                try:
                    check_strength(kind, v)
                except ValueError as exc:
                    raise FieldError(f"strengths.{kind}", str(exc).partition(": ")[2] or str(exc)) from None
            if len(set(values)) != len(values):
                raise FieldError(f"strengths.{kind}", "a strength is listed twice")
        if self.max_images is not None and self.max_images < 1:
            raise FieldError("max_images", "must be >= 1 (or null for the whole validation fold)")
        for name in ("tolerance_geometric", "tolerance_photometric"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FieldError(name, "must be in [0, 1]")

    def perturbations(self) -> list[Perturbation]:
        """Every configured (kind, strength), kinds in config order, strengths as listed."""
        return [Perturbation(kind, float(s)) for kind, values in self.strengths.items() for s in values]

    def tolerance(self, kind: str) -> float:
        """The largest drop of mean Dice that passes for ``kind``."""
        return self.tolerance_geometric if kind in GEOMETRIC_KINDS else self.tolerance_photometric
