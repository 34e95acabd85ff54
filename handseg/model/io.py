"""How an image becomes model input, and logits become full-size output: the one definition of both.

Training (loader items, the loss), validation, the evaluator, the compiled engines and the benchmarks all call
these functions, so a model always sees images the way it was trained to see them:

* :class:`InputSpec` says how a checkpoint looks at an image (``resize``: the whole image at ``image_size``;
  ``tile``: native-resolution tiles of ``tile_size``) and with which normalisation (a per-image intensity
  standardisation, :mod:`handseg.model.intensity`, then mean/std); every checkpoint and engine manifest records it.
* :func:`model_input`: a whole grayscale uint8 image -> the normalised 3-channel float32 the network takes;
  :func:`to_pixel_values` does the same for a crop or tile, with the lookup table fitted to its whole image.
* :func:`upsample_logits`: logits at the network's output resolution -> any larger size, bilinearly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, NamedTuple, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from handseg.format.classes import NUM_CLASSES
from handseg.model.intensity import Intensity, intensity_map
from handseg.runtime.config_schema import FieldError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass
class InputSpec:
    """How a model was trained to see images: ``resize`` (stage 1: whole image resized to ``image_size``)
    or ``tile`` (stage 2: native-resolution tiles of ``tile_size`` with ``overlap``); ``mean``/``std`` apply
    to the grayscale image standardised to the unit scale by ``intensity`` (``none``: ``/ 255``, what checkpoints
    without the field were trained with) and replicated to three channels. ``prior``: a cascade's stage 2 also
    sees its stage 1's probabilities (29 more input channels) and adds its output to stage 1's logits; this is
    how that stage 1 sees the image."""

    mode: Literal["resize", "tile"]
    image_size: int
    tile_size: int
    overlap: float = 0.25
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    prior: "InputSpec | None" = None
    intensity: Intensity = field(default_factory=Intensity)

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]

    def check(self) -> None:
        if self.prior is not None:
            if self.prior.prior is not None or self.prior.mode != "resize":
                raise FieldError("prior", "a cascade's prior is a stage-1 model (whole image resized)")
            self.prior.check()
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
        try:
            self.intensity.check()
        except FieldError as exc:
            raise FieldError(f"intensity.{exc.key}", exc.problem) from None

    @property
    def model_size(self) -> int:
        """Side of the square network input: ``image_size`` in resize mode, ``tile_size`` in tile mode."""
        return self.image_size if self.mode == "resize" else self.tile_size

    @property
    def channels(self) -> int:
        """Input channels of the network: 3, plus one per class for a cascade's stage 2."""
        return 3 if self.prior is None else 3 + NUM_CLASSES

    @classmethod
    def from_dict(cls, data: dict) -> "InputSpec":
        """InputSpec from its JSON form (as stored in checkpoints and engine manifests), checked."""
        data = dict(data)
        if isinstance(data.get("prior"), dict):
            data["prior"] = cls.from_dict(data["prior"])
        if "intensity" in data:  # absent from checkpoints saved before the standardisation: none, as they were
            try:
                data["intensity"] = Intensity.from_dict(data["intensity"])
            except FieldError as exc:
                raise FieldError(f"intensity.{exc.key}", exc.problem) from None
        spec = cls(**data)
        spec.check()
        return spec

    def to_dict(self) -> dict:
        """JSON form (tuples as lists, the prior nested)."""
        return _json_form(asdict(self))


def _json_form(value):
    if isinstance(value, dict):
        return {k: _json_form(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


def to_pixel_values(image: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    device: str | torch.device = "cpu", lut: np.ndarray | None = None) -> torch.Tensor:
    """Grayscale uint8 (h, w) -> normalised float32 (3, h, w) on ``device``: each grey level to the unit scale
    (``lut`` (256,) float32, from :func:`handseg.model.intensity.intensity_map` of the whole image this one is cut
    from; None: ``/ 255``), replicated to three channels, ``(x - mean[c]) / std[c]``. The uint8 image moves to
    ``device`` first (4x less to copy)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.shape} {image.dtype}")
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # a read-only memory-mapped view: torch wants writable memory
        image = image.copy()
    device = torch.device(device)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    if lut is not None:  # the per-channel table of every grey level, then one lookup per pixel
        table = (torch.as_tensor(lut, dtype=torch.float32, device=device).view(1, 1, 256) - m) / s  # (3, 1, 256)
        if device.type == "cpu":
            out = np.empty((3, *image.shape), dtype=np.float32)
            for c in range(3):
                cv2.LUT(image, table[c, 0].numpy(), dst=out[c])
            return torch.from_numpy(out)
        return table[:, 0, torch.from_numpy(image).to(device).long()]
    x = torch.from_numpy(image).to(device).float().div_(255.0)
    return (x.unsqueeze(0) - m) / s


def model_input(image: np.ndarray, spec: InputSpec, device: str | torch.device = "cpu") -> torch.Tensor:
    """A whole grayscale uint8 image (h, w) -> the normalised float32 (3, h, w) a model with input ``spec`` takes:
    the intensity standardisation fitted to this image, then mean/std (:func:`to_pixel_values`)."""
    fitted = intensity_map(image, spec.intensity)
    return to_pixel_values(fitted.image, spec.mean, spec.std, device, fitted.lut)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, C, h, w) -> float32 (B, C, H, W) by bilinear resizing (``align_corners=False``); how
    SegFormer's 1/4-resolution logits meet full-resolution masks in the loss and at inference. A no-op
    (apart from the float32 cast) when the sizes already match."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class _Taps(NamedTuple):
    """Per output position (B, n): the two source indices (int64) and their float32 weights."""

    i0: torch.Tensor
    i1: torch.Tensor
    w0: torch.Tensor
    w1: torch.Tensor


def _taps(start: torch.Tensor, n: int, step: float, size: torch.Tensor, in_size: int) -> _Taps:
    """Bilinear taps (``align_corners=False``, clamped at the borders) of ``n`` cells of ``step`` native pixels
    from ``start`` (B,) on an axis of ``size`` (B,) native pixels, read from a grid of ``in_size`` cells: cell j's
    centre ``start + (j + 0.5) * step`` is at ``centre * in_size / size - 0.5`` on the grid."""
    centre = (torch.arange(n, dtype=torch.float32, device=start.device) + 0.5) * step
    src = ((start[:, None] + centre[None]) * (in_size / size[:, None]) - 0.5).clamp_(min=0.0)
    i0 = src.to(torch.int64).clamp_(max=in_size - 1)
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    w1 = (src - i0.to(torch.float32)).clamp_(0.0, 1.0)
    return _Taps(i0, i1, 1.0 - w1, w1)


def _sample_one(grid: torch.Tensor, ty: _Taps, tx: _Taps, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Separable bilinear sampling of ``grid`` (C, h, w) at taps ``k`` of ``ty`` and ``tx``: (C, n_y, n_x) float32.
    Columns first, on the few source rows needed, then each run of output rows between the same two source rows
    at once; every step is a float32 ``*`` or ``+`` of its own (no fused multiply-add), so a pixel's value
    depends on its coordinates only, never on the window it is computed in."""
    grid = grid.float()
    iy0, iy1, wy0, wy1 = ty.i0[k], ty.i1[k], ty.w0[k], ty.w1[k]
    lo, hi = int(iy0.min()), int(iy1.max()) + 1  # the source rows the window reads lie in [lo, hi)
    src = grid[:, lo:hi].contiguous()  # (C, R, w)
    c, r, w = src.shape
    flat = src.view(c * r, w)  # columns gathered on a 2-D view: several times faster than along dim 2
    across = (flat.index_select(1, tx.i0[k]) * tx.w0[k] + flat.index_select(1, tx.i1[k]) * tx.w1[k]).view(c, r, -1)
    p0, p1 = (iy0 - lo).tolist(), (iy1 - lo).tolist()
    if out is None:
        out = grid.new_empty((c, len(p0), across.shape[2]))
    bounds = [0] + [j for j in range(1, len(p0)) if (p0[j], p1[j]) != (p0[j - 1], p1[j - 1])] + [len(p0)]
    scratch = out.new_empty((c, max(e - s for s, e in zip(bounds[:-1], bounds[1:])), across.shape[2]))
    for s, e in zip(bounds[:-1], bounds[1:]):  # output rows [s, e) read source rows p0[s] and p1[s]
        part, second = out[:, s:e], scratch[:, :e - s]
        torch.mul(across[:, p0[s], None, :], wy0[s:e, None], out=part)
        torch.mul(across[:, p1[s], None, :], wy1[s:e, None], out=second)
        part.add_(second)
    return out


def logits_over_windows(logits: torch.Tensor, windows: torch.Tensor, crop: int, out: int,
                        batched: bool | None = None) -> torch.Tensor:
    """Whole-image logits (B, C, h, w) upsampled to each image's native size, then sampled over a crop: an
    ``out`` x ``out`` grid of cells covering the ``crop`` x ``crop`` window whose top-left corner and image size
    are ``windows`` (B, 4) = (y0, x0, H, W). Returns (B, C, out, out) float32: :func:`upsample_logits` to (H, W)
    followed by a crop, up to float rounding (and, for ``out < crop``, a sample at each cell's centre). How a
    cascade's stage 2 sees its stage 1, in training and (through :func:`logits_in_window`) at inference.
    ``batched``: all windows at once (default on a GPU) or one at a time (default on the CPU); the same values."""
    windows = windows.to(device=logits.device, dtype=torch.float32)
    y0, x0, h, w = windows.unbind(dim=1)
    step = crop / out
    ty, tx = _taps(y0, out, step, h, logits.shape[-2]), _taps(x0, out, step, w, logits.shape[-1])
    if batched if batched is not None else logits.device.type != "cpu":
        return _sample_batch(logits, ty, tx, out)
    # On the CPU one window at a time reads only the source rows it needs (faster there); the per-window host
    # syncs in _sample_one would stall a GPU, which gets the batched form (the same values to the bit).
    return torch.stack([_sample_one(logits[k if len(logits) > 1 else 0], ty, tx, k) for k in range(len(windows))])


def _sample_batch(logits: torch.Tensor, ty: _Taps, tx: _Taps, out: int) -> torch.Tensor:
    """:func:`_sample_one` for every window at once, without a host sync: ``logits`` (B or 1, C, h, w) at taps
    (B, out) -> (B, C, out, out) float32. Columns on every source row, then rows; each step a float32 ``*`` or
    ``+`` of its own in the order of :func:`_sample_one`, so every value is the same to the bit."""
    grid = logits.float()
    b, c, gh = len(ty.i0), grid.shape[1], grid.shape[2]
    grid = grid.expand(b, -1, -1, -1) if len(grid) == 1 else grid
    across = grid.gather(3, tx.i0[:, None, None, :].expand(b, c, gh, out)).mul_(tx.w0[:, None, None, :])
    across.add_(grid.gather(3, tx.i1[:, None, None, :].expand(b, c, gh, out)).mul_(tx.w1[:, None, None, :]))
    result = across.gather(2, ty.i0[:, None, :, None].expand(b, c, out, out)).mul_(ty.w0[:, None, :, None])
    return result.add_(across.gather(2, ty.i1[:, None, :, None].expand(b, c, out, out)).mul_(ty.w1[:, None, :, None]))


def logits_in_window(logits: torch.Tensor, image_hw: tuple[int, int], window: tuple[int, int, int, int],
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``[y0, y1)`` and columns ``[x0, x1)`` (``window``: (y0, x0, y1, x1)) of whole-image logits (C, h, w)
    upsampled to ``image_hw``:
    (C, y1 - y0, x1 - x0) float32. Every pixel gets the value :func:`logits_over_windows` gives it at native
    resolution (``out = crop``), whatever the window, so a cascade's stage 2 sees at inference exactly what it
    saw in training, and a window of a window equals the window of the whole. ``out``: where to write it."""
    y0, x0, y1, x1 = window
    size = logits.new_tensor(image_hw, dtype=torch.float32)
    ty = _taps(logits.new_tensor([y0], dtype=torch.float32), y1 - y0, 1.0, size[:1], logits.shape[-2])
    tx = _taps(logits.new_tensor([x0], dtype=torch.float32), x1 - x0, 1.0, size[1:], logits.shape[-1])
    return _sample_one(logits, ty, tx, 0, out)
