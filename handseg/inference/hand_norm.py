"""Hand normalisation (size and orientation): pure functions.

Both stages learn bones at the sizes and poses training shows them, and augmentation only widens that so far: a
hand shrunk by a zoom of 0.75 (or a child's, or one further from the detector) shows its carpal bones on half as
many pixels, and a hand rotated 30 degrees beyond the natural spread of wrist angles (about 50 degrees off the
mean) loses fingertips. The whole-image pass (a stage-1 model, or a cascade's stage 1) tells how much of the image
the hand covers and which way it points (carpal bones to fingers). Threshold tuning stores what the validation
hands show (the reference); when an image's hand is far from it, the image is magnified or shrunk about the hand
to the reference size, rotated back by the part of its angle that lies beyond the validation hands' spread, and
moved to the middle; the models run on that image and their masks (or probabilities) are mapped back through the
inverse of the same affine map. Images within the reference's tolerances are left alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import cv2
import numpy as np
import torch

from handseg.format.class_masks import ClassMasks
from handseg.format.classes import ANATOMY
from handseg.runtime.config_schema import FieldError

CARPAL_CLASSES = tuple(b.index for b in ANATOMY.values() if b.group == "carpal")
FINGER_CLASSES = tuple(b.index for b in ANATOMY.values() if b.group == "finger" and b.ray != "thumb")


@dataclass(frozen=True)
class HandNorm:
    """``reference_fraction``: the fraction of the image a hand covers (the union of its bones) on the
    validation images; ``tolerance``: a relative change of scale below which the image keeps its size;
    ``min_factor``/``max_factor``: the range of the resize factor (1.33 undoes a zoom of 0.75);
    ``reference_angle``: the validation hands' mean axis (degrees counter-clockwise from the image's x axis, 90
    = fingers up; None: no rotation); ``angle_spread``: the largest deviation of a validation hand from it (a hand
    within it is not rotated, one beyond it is rotated back by the excess); ``min_rotation``: an excess below
    this many degrees is left alone."""

    reference_fraction: float
    tolerance: float = 0.1
    min_factor: float = 0.75
    max_factor: float = 1.4
    reference_angle: float | None = None
    angle_spread: float = 0.0
    min_rotation: float = 5.0

    def check(self) -> None:
        if not 0.0 < self.reference_fraction < 1.0:
            raise FieldError("reference_fraction", f"must be in (0, 1), got {self.reference_fraction}")
        if not 0.0 <= self.tolerance < 1.0:
            raise FieldError("tolerance", f"must be in [0, 1), got {self.tolerance}")
        if not 0.0 < self.min_factor <= 1.0 <= self.max_factor:
            raise FieldError("min_factor", f"need 0 < min_factor <= 1 <= max_factor, got {self.min_factor}, "
                                           f"{self.max_factor}")
        if self.reference_angle is not None and not -180.0 <= self.reference_angle <= 180.0:
            raise FieldError("reference_angle", f"must be in [-180, 180] degrees, got {self.reference_angle}")
        if not 0.0 <= self.angle_spread < 180.0:
            raise FieldError("angle_spread", f"must be in [0, 180) degrees, got {self.angle_spread}")
        if not self.min_rotation >= 0.0:
            raise FieldError("min_rotation", f"must be >= 0 degrees, got {self.min_rotation}")

    def to_dict(self) -> dict:
        return {k: v if v is None else round(v, 6) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "HandNorm":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise FieldError(sorted(unknown)[0], "unknown hand_norm key")
        norm = cls(**{k: v if v is None else float(v) for k, v in data.items()})
        norm.check()
        return norm


def describe_reference(entry: dict | None) -> str:
    """The reference of a :meth:`HandNorm.to_dict` entry in words, for reports ("off" without one)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("reference_fraction"), (int, float)):
        return "off"
    text = f"hand covers {entry['reference_fraction']:.3f} of the image"
    if isinstance(entry.get("reference_angle"), (int, float)):
        text += f", axis at {entry['reference_angle']:.1f} +- {entry.get('angle_spread', 0.0):.1f} degrees"
    return text


def hand_fraction(logits: torch.Tensor) -> float:
    """Fraction of the grid where any class is predicted (logit > 0): ``logits`` (C, h, w) over the whole image."""
    return float((logits > 0).any(0).float().mean())


def hand_centre(logits: torch.Tensor) -> tuple[float, float]:
    """Centre (y, x) of the box of the predicted hand, as fractions of the image side (0.5, 0.5 when empty);
    ``logits`` (C, h, w) over the whole image."""
    fg = (logits > 0).any(0)
    rows, cols = torch.nonzero(fg.any(1)).flatten(), torch.nonzero(fg.any(0)).flatten()
    if len(rows) == 0:
        return 0.5, 0.5
    h, w = fg.shape
    return (float(rows[0] + rows[-1] + 1) / (2 * h), float(cols[0] + cols[-1] + 1) / (2 * w))


def _centroid(fg: torch.Tensor, image_hw: tuple[int, int]) -> tuple[float, float] | None:
    """Centroid (y, x) in image pixels of a (h, w) bool grid laid over an image of ``image_hw``."""
    ys, xs = torch.nonzero(fg, as_tuple=True)
    if len(ys) == 0:
        return None
    return ((float(ys.double().mean()) + 0.5) * image_hw[0] / fg.shape[0],
            (float(xs.double().mean()) + 0.5) * image_hw[1] / fg.shape[1])


def hand_angle(logits: torch.Tensor, image_hw: tuple[int, int]) -> float | None:
    """The hand's axis, from the centroid of the carpal bones to that of the four fingers' bones, in degrees
    counter-clockwise from the image's x axis as seen on screen (90: fingers up); None when either is not
    predicted or the two lie within a pixel of each other. ``logits`` (C, h, w) over the whole image of size
    ``image_hw`` (so the angle is the image's, whatever the grid's aspect)."""
    fg = logits > 0
    carpal = _centroid(fg[list(CARPAL_CLASSES)].any(0), image_hw)
    fingers = _centroid(fg[list(FINGER_CLASSES)].any(0), image_hw)
    if carpal is None or fingers is None:
        return None
    dy, dx = carpal[0] - fingers[0], fingers[1] - carpal[1]
    return math.degrees(math.atan2(dy, dx)) if math.hypot(dy, dx) >= 1.0 else None


def angle_difference(a: float, b: float) -> float:
    """``a - b`` in degrees, wrapped to [-180, 180)."""
    return (a - b + 180.0) % 360.0 - 180.0


def rescale_factor(fraction: float, norm: HandNorm) -> float:
    """How much to magnify the image so that a hand covering ``fraction`` of it covers the reference fraction:
    ``sqrt(reference / fraction)`` clipped to the norm's range; 1.0 within the tolerance (and for no hand)."""
    if fraction <= 0.0:
        return 1.0
    factor = min(max(math.sqrt(norm.reference_fraction / fraction), norm.min_factor), norm.max_factor)
    return 1.0 if abs(factor - 1.0) <= norm.tolerance else factor


def rotation_angle(angle: float | None, norm: HandNorm) -> float:
    """Degrees to rotate the image (counter-clockwise) so that a hand at ``angle`` comes back to the edge of the
    validation hands' spread about the reference: 0.0 within the spread plus ``min_rotation``, for no angle, or
    without a reference."""
    if angle is None or norm.reference_angle is None:
        return 0.0
    offset = angle_difference(norm.reference_angle, angle)
    excess = abs(offset) - norm.angle_spread
    return math.copysign(excess, offset) if excess > norm.min_rotation else 0.0


def normalising_affine(image_hw: tuple[int, int], factor: float, centre: tuple[float, float],
                       degrees: float = 0.0) -> np.ndarray:
    """(2, 3) float64 affine map from image pixels to the normalised image's: magnify by ``factor`` and rotate
    by ``degrees`` (counter-clockwise on screen) about the hand's ``centre`` (fractions of the sides, as
    :func:`hand_centre` gives), and move the centre to the image's centre."""
    h, w = image_hw
    cy, cx = centre[0] * h - 0.5, centre[1] * w - 0.5  # pixel centres at integer coordinates (OpenCV's)
    matrix = cv2.getRotationMatrix2D((cx, cy), float(degrees), float(factor)).astype(np.float64)
    matrix[:, 2] += ((w - 1) / 2 - cx, (h - 1) / 2 - cy)
    return matrix


def warp_image(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``image`` (H, W) resampled through ``matrix`` (bilinear), black where it has no pixels."""
    h, w = image.shape
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def unwarp_probs(probs: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """Probabilities (C, H, W) over the normalised image mapped back to the image (0 where it saw nothing)."""
    h, w = probs.shape[-2:]
    out = [cv2.warpAffine(p.cpu().numpy(), matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) for p in probs.float()]
    return torch.from_numpy(np.stack(out)).to(probs.device)


def unwarp_masks(masks: ClassMasks, matrix: np.ndarray) -> ClassMasks:
    """Masks over the normalised image mapped back to the image through the (2, 3) affine ``matrix`` (image ->
    normalised image), class box by class box (bilinear, cut at one half: nearest-pixel accurate without a
    full-size map)."""
    linear, shift = matrix[:, :2], matrix[:, 2]
    inverse = np.linalg.inv(linear)
    h, w = masks.height, masks.width
    boxes, out = [], []
    for box, mask in zip(masks.boxes, masks.masks):
        if box is None:
            boxes.append(None)
            out.append(None)
            continue
        y0, x0, y1, x1 = box
        # the box's corner pixels (centres x0 .. x1 - 1, y0 .. y1 - 1) back in image pixels: their bounding box,
        # one pixel of margin for the resampling
        corners = np.array([(x, y) for x in (x0, x1 - 1) for y in (y0, y1 - 1)], dtype=np.float64)
        back = (corners - shift) @ inverse.T  # (4, 2) x, y
        left, top = (max(int(v) - 1, 0) for v in np.floor(back.min(0)))
        right, bottom = min(int(np.ceil(back[:, 0].max())) + 2, w), min(int(np.ceil(back[:, 1].max())) + 2, h)
        if top >= bottom or left >= right:
            boxes.append(None)
            out.append(None)
            continue
        # this crop's pixel (u, v) is the image's (left + u, top + v); the mask's pixel (0, 0) is (x0, y0)
        local = np.concatenate([linear, (linear @ (left, top) + shift - (x0, y0))[:, None]], axis=1)
        patch = cv2.warpAffine(mask.to(torch.uint8).mul(255).cpu().numpy(), local, (right - left, bottom - top),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
        boxes.append((top, left, bottom, right))
        out.append(torch.from_numpy(patch >= 128).to(mask.device))
    return ClassMasks(h, w, boxes, out).tight()
