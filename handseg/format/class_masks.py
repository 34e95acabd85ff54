"""Binary masks of the 29 classes of one image, each kept only inside its bounding box.

A bone covers well under 5% of a 2048 x 2048 image, so what inference and scoring need (RLE strings, Dice
counts, areas, connected components) never requires the 29 full-size maps: :class:`ClassMasks` holds, per
class, a box ``(y0, x0, y1, x1)`` (end-exclusive) and a ``(y1 - y0, x1 - x0)`` bool tensor, on any device.
:meth:`ClassMasks.to_dense` makes the full (29, H, W) stack where a caller really wants it (overlays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from handseg.format.rasterize import rasterize_window
from handseg.format.rle import rle_encode_boxes

Box = tuple[int, int, int, int]


def bounding_box(mask: torch.Tensor) -> Box | None:
    """(y0, x0, y1, x1) end-exclusive of the nonzero pixels of a (h, w) mask; None when it is empty."""
    rows = mask.any(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    cols = mask.any(dim=0).nonzero()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


@dataclass
class ClassMasks:
    """C binary masks on a ``height`` x ``width`` image: ``boxes[c]`` (None for an empty class) and
    ``masks[c]``, a bool tensor of the box's shape (None with the box). Nothing outside a box is set."""

    height: int
    width: int
    boxes: list[Box | None]
    masks: list[torch.Tensor | None]

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.masks):
            raise ValueError(f"{len(self.boxes)} boxes for {len(self.masks)} masks")
        for box, mask in zip(self.boxes, self.masks):
            if (box is None) != (mask is None):
                raise ValueError("a class has a box without a mask or a mask without a box")
            if box is not None and tuple(mask.shape) != (box[2] - box[0], box[3] - box[1]):
                raise ValueError(f"mask {tuple(mask.shape)} does not fit its box {box}")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_dense(cls, masks) -> "ClassMasks":
        """From a (C, H, W) stack (numpy or torch, any dtype; nonzero = 1), each class cropped to its content."""
        dense = torch.as_tensor(np.asarray(masks) if isinstance(masks, np.ndarray) else masks) != 0
        c, h, w = dense.shape
        boxes = [bounding_box(dense[k]) for k in range(c)]
        crops = [None if b is None else dense[k, b[0]:b[2], b[1]:b[3]].clone() for k, b in enumerate(boxes)]
        return cls(h, w, boxes, crops)

    @classmethod
    def from_polygons(cls, polygons: Sequence[np.ndarray], image_hw: tuple[int, int]) -> "ClassMasks":
        """The C polygons (x, y pixel-centre vertices) rasterised at native size, each in its own box: equal to
        ``rasterize(polygons, image_hw)`` class by class, without the full stack."""
        h, w = image_hw
        boxes, masks = [], []
        for poly in polygons:
            pts = np.asarray(poly, dtype=np.float64)
            box = None
            if pts.ndim == 2 and len(pts) >= 3:
                x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
                x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
                x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
                if x0 < x1 and y0 < y1:
                    crop = torch.from_numpy(rasterize_window([poly], (y0, x0, y1 - y0, x1 - x0))[0] != 0)
                    tight = bounding_box(crop)
                    if tight is not None:
                        box = (y0 + tight[0], x0 + tight[1], y0 + tight[2], x0 + tight[3])
                        crop = crop[tight[0]:tight[2], tight[1]:tight[3]].clone()
            boxes.append(box)
            masks.append(None if box is None else crop)
        return cls(h, w, boxes, masks)

    def to(self, device: str | torch.device) -> "ClassMasks":
        return ClassMasks(self.height, self.width, self.boxes,
                          [None if m is None else m.to(device) for m in self.masks])

    def to_dense(self) -> torch.Tensor:
        """(C, H, W) bool on the masks' device."""
        device = next((m.device for m in self.masks if m is not None), torch.device("cpu"))
        out = torch.zeros((len(self), self.height, self.width), dtype=torch.bool, device=device)
        for k, (box, mask) in enumerate(zip(self.boxes, self.masks)):
            if box is not None:
                out[k, box[0]:box[2], box[1]:box[3]] = mask
        return out

    def areas(self) -> np.ndarray:
        """(C,) int64 pixels per class."""
        return np.array([0 if m is None else int(m.sum()) for m in self.masks], dtype=np.int64)

    def counts(self, truth: "ClassMasks") -> np.ndarray:
        """Dice counts of these masks (prediction) against ``truth``: (C, 3) int64 ``[|P and G|, |P|, |G|]``."""
        if (self.height, self.width, len(self)) != (truth.height, truth.width, len(truth)):
            raise ValueError("prediction and truth differ in image size or class count")
        out = np.zeros((len(self), 3), dtype=np.int64)
        out[:, 1], out[:, 2] = self.areas(), truth.areas()
        for k, (pb, pm, gb, gm) in enumerate(zip(self.boxes, self.masks, truth.boxes, truth.masks)):
            if pb is None or gb is None:
                continue
            y0, x0, y1, x1 = max(pb[0], gb[0]), max(pb[1], gb[1]), min(pb[2], gb[2]), min(pb[3], gb[3])
            if y0 < y1 and x0 < x1:
                p = pm[y0 - pb[0]:y1 - pb[0], x0 - pb[1]:x1 - pb[1]]
                g = gm[y0 - gb[0]:y1 - gb[0], x0 - gb[1]:x1 - gb[1]].to(p.device)
                out[k, 0] = int((p & g).sum())
        return out

    def rle(self) -> list[str]:
        """The competition RLE string of every class (row-major over the whole image, 1-based starts)."""
        items = [None if b is None else (b[0], b[1], m) for b, m in zip(self.boxes, self.masks)]
        return rle_encode_boxes(items, self.height, self.width)

    def tight(self) -> "ClassMasks":
        """The same masks with every box shrunk to its pixels (an empty one dropped)."""
        return self.map(lambda _c, mask: mask)

    def map(self, fn: Callable[[int, torch.Tensor], torch.Tensor]) -> "ClassMasks":
        """Apply ``fn(class index, mask) -> mask of the same shape`` to every non-empty class (post-processing);
        boxes are shrunk to what is left."""
        boxes, masks = [], []
        for k, (box, mask) in enumerate(zip(self.boxes, self.masks)):
            if box is not None:
                mask = fn(k, mask)
                tight = bounding_box(mask)
                if tight is not None:
                    box = (box[0] + tight[0], box[1] + tight[1], box[0] + tight[2], box[1] + tight[3])
                    mask = mask[tight[0]:tight[2], tight[1]:tight[3]]
                else:
                    box, mask = None, None
            boxes.append(box)
            masks.append(mask)
        return ClassMasks(self.height, self.width, boxes, masks)
