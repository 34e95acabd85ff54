"""Label formats of the training batches, and their conversion to the float masks the loss needs.

The cache stores the 29 masks of an image bit-packed, one (H, W) uint32 with bit c = class c, and the
augmentations move them packed. ``data.label_dtype`` chooses what a dataset item's ``labels`` is:

- ``packed`` (default): (h, w) int32, the uint32 bits reinterpreted (29 classes never touch bit 31). A
  (1024, 1024) crop is 4 MB instead of 121 MB in float32, so workers, collate and the host-to-device copy
  move 29x less; :func:`labels_to_float` unpacks the batch on the training device.
- ``float32`` / ``uint8``: (29, h, w) {0, 1}, unpacked in the loader.

Batches are therefore (B, h, w) int32 or (B, 29, h, w) float32/uint8; :func:`labels_to_float` takes either.
"""

from __future__ import annotations

import numpy as np
import torch

from handseg.data.data_config import LABEL_FORMATS
from handseg.format.classes import NUM_CLASSES
from handseg.format.rasterize import unpack_bits, unpack_label_batch


def label_format(value: str | torch.dtype) -> str:
    """Normalise a label format: one of :data:`LABEL_FORMATS`, or ``torch.float32`` / ``torch.uint8``."""
    name = str(value).removeprefix("torch.") if isinstance(value, torch.dtype) else str(value)
    if name not in LABEL_FORMATS:
        raise ValueError(f"label format must be one of {LABEL_FORMATS}, got {value!r}")
    return name


def to_labels(packed: np.ndarray, fmt: str | torch.dtype = "packed") -> torch.Tensor:
    """(h, w) uint32 bit-packed masks -> one item's ``labels``.

    ``packed``: (h, w) int32 (same bits, own memory); ``float32`` / ``uint8``: (29, h, w) {0, 1} of that dtype.
    """
    fmt = label_format(fmt)
    packed = np.ascontiguousarray(packed, dtype=np.uint32)
    if fmt == "packed":
        if not packed.flags.writeable:  # a read-only memory-mapped view (no augmentation or crop copied it)
            packed = packed.copy()
        return torch.from_numpy(packed.view(np.int32))
    return torch.from_numpy(unpack_bits(packed, NUM_CLASSES)).to(getattr(torch, fmt))


def labels_to_float(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """A label batch in any format -> (B, num_classes, h, w) float32 {0, 1}, on the batch's own device.

    ``labels``: (B, h, w) int32 packed (unpacked with :func:`~handseg.format.rasterize.unpack_label_batch`, a few
    shifts on the device) or (B, num_classes, h, w) float32/uint8 (converted with ``.float()``).
    """
    if labels.ndim == 3 and labels.dtype == torch.int32:
        return unpack_label_batch(labels, num_classes, torch.float32)
    if labels.ndim == 4 and labels.shape[1] == num_classes:
        return labels.float()
    raise ValueError(
        f"expected labels (B, h, w) int32 packed or (B, {num_classes}, h, w), got {tuple(labels.shape)} {labels.dtype}"
    )
