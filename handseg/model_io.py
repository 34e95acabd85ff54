"""How an image becomes model input, and logits become full-size output: the one definition of both.

Training (loader items, the loss), validation, the evaluator, the compiled engines and the benchmarks all call
these functions, so a model always sees images the way it was trained to see them:

* :class:`InputSpec` says how a checkpoint looks at an image (``resize``: the whole image at ``image_size``;
  ``tile``: native-resolution tiles of ``tile_size``) and with which normalisation; every checkpoint and engine
  manifest records it.
* :func:`to_pixel_values`: a grayscale uint8 image -> the normalised 3-channel float32 the network takes.
* :func:`upsample_logits`: logits at the network's output resolution -> any larger size, bilinearly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from handseg.config_schema import FieldError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class InputSpec:
    """How a model was trained to see images: ``resize`` (stage 1: whole image resized to ``image_size``)
    or ``tile`` (stage 2: native-resolution tiles of ``tile_size`` with ``overlap``); ``mean``/``std`` apply
    to the grayscale image scaled to [0, 1] and replicated to three channels."""

    mode: Literal["resize", "tile"]
    image_size: int
    tile_size: int
    overlap: float = 0.25
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    def check(self) -> None:
        if self.mode not in ("resize", "tile"):
            raise FieldError("mode", f"must be 'resize' or 'tile', got {self.mode!r}")
        if self.image_size <= 0:
            raise FieldError("image_size", f"must be positive, got {self.image_size}")
        if self.tile_size <= 0:
            raise FieldError("tile_size", f"must be positive, got {self.tile_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise FieldError("overlap", f"must be in [0, 1), got {self.overlap}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise FieldError("mean", "mean and std need three values each")
        if any(s <= 0 for s in self.std):
            raise FieldError("std", f"must be positive, got {list(self.std)}")

    @property
    def model_size(self) -> int:
        """Side of the square network input: ``image_size`` in resize mode, ``tile_size`` in tile mode."""
        return self.image_size if self.mode == "resize" else self.tile_size

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        """InputSpec from its JSON form (as stored in checkpoints and engine manifests), checked."""
        spec = cls(**data)
        spec.check()
        return spec

    def to_dict(self) -> dict:
        """JSON form (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def to_pixel_values(image: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Grayscale uint8 (h, w) -> normalised float32 (3, h, w) on ``device``: /255, replicated to three
    channels, ``(x - mean[c]) / std[c]``. The uint8 image moves to ``device`` first (4x less to copy)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # a read-only memory-mapped view: torch wants writable memory
        image = image.copy()
    x = torch.from_numpy(image).to(device).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(3, 1, 1)
    return (x.unsqueeze(0) - m) / s


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, C, h, w) -> float32 (B, C, H, W) by bilinear resizing (``align_corners=False``); how
    SegFormer's 1/4-resolution logits meet full-resolution masks in the loss and at inference. A no-op
    (apart from the float32 cast) when the sizes already match."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
