"""The two training stages' datasets: whole images (stage 1) and native-resolution crops (stage 2).

Stage 1 (:class:`WholeImageDataset`) shows the model whole images resized to ``image_size``; stage 2
(:class:`CropDataset`) shows ``crop_size`` crops at native resolution, most of them centred on a bone.
Both read an :class:`~handseg.cache.ImageCache` (decoded once, memory-mapped), augment the image and its
bit-packed masks together (:mod:`handseg.transforms`) and return::

    {"pixel_values": (3, h, w) float32,   # handseg.model_io.to_pixel_values: the same as inference
     "labels":       (h, w) int32}        # bit c = class c (CLASSES order, multi-label), see trainer.labels;
                                         # (29, h, w) float32/uint8 with data.label_dtype: float32/uint8

Determinism: every random choice for item ``i`` (crop position, augmentation) comes from a generator seeded
with ``(seed, epoch, i)``, so a sample does not depend on which loader worker or process draws it; call
``set_epoch`` every epoch (:func:`trainer.loader.set_epoch` does it for a loader).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from handseg.cache import ImageCache
from handseg.data_config import LabelFormat
from handseg.model_io import IMAGENET_MEAN, IMAGENET_STD, to_pixel_values
from handseg.transforms import apply_transforms
from trainer.labels import label_format, to_labels


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch: independent of worker, process and draw order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


class _CachedDataset(Dataset):
    """Shared parts: cache, indices into it, augmentation, normalisation, epoch."""

    def __init__(
        self,
        cache: ImageCache,
        indices: Sequence[int] | None,
        transform: A.Compose | None,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        label_dtype: LabelFormat | torch.dtype,
    ):
        if not cache.has_masks:
            raise ValueError(f"{cache.path}: training needs annotated samples")
        self.cache = cache
        self.indices = list(range(len(cache))) if indices is None else [int(i) for i in indices]
        self.transform = transform
        self.seed = int(seed)
        self.mean, self.std = tuple(mean), tuple(std)
        self.label_dtype = label_format(label_dtype)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _finish(self, image: np.ndarray, packed: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        seed = int(rng.integers(0, 2**31 - 1))
        image, packed = apply_transforms(self.transform, image, packed, seed=seed)
        return {
            "pixel_values": to_pixel_values(image, self.mean, self.std),
            "labels": to_labels(packed, self.label_dtype),
        }


class WholeImageDataset(_CachedDataset):
    """Stage 1: item i is cache image ``indices[i]`` at the cache's resolution, augmented.

    Returns dict(pixel_values (3, S, S) float32, labels (S, S) int32 packed, or (29, S, S) float32/uint8) with
    S = the cache's resolution.
    """

    def __init__(
        self,
        cache: ImageCache,
        indices: Sequence[int] | None = None,
        transform: A.Compose | None = None,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        label_dtype: LabelFormat | torch.dtype = "packed",
    ):
        super().__init__(cache, indices, transform, seed, mean, std, label_dtype)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        k = self.indices[i]
        return self._finish(self.cache.image(k), self.cache.mask(k), item_rng(self.seed, self.epoch, i))


class CropWindow(NamedTuple):
    """Where item i's crop lies: cache index, top-left corner, and the class it was centred on (-1: random)."""

    index: int
    y0: int
    x0: int
    cls: int


class CropDataset(_CachedDataset):
    """Stage 2: ``crops_per_image`` native-resolution ``crop_size`` crops per image and epoch.

    With probability ``bone_fraction`` a crop is centred on a bone: a class is drawn uniformly among those
    present in the image (so finger-16, Trapezoid and Pisiform, under 1% of bone pixels each, still centre
    1/29 of these crops each), then a pixel uniformly among that class's pixels; the crop is shifted inside
    the image if it would cross the border (the pixel stays inside). Otherwise the crop is placed uniformly.
    An image smaller than the crop is zero-padded at the bottom/right. Needs a native-resolution cache.

    Returns dict(pixel_values (3, C, C) float32, labels (C, C) int32 packed, or (29, C, C) float32/uint8) with
    C = ``crop_size``.
    """

    def __init__(
        self,
        cache: ImageCache,
        crop_size: int,
        indices: Sequence[int] | None = None,
        crops_per_image: int = 1,
        bone_fraction: float = 0.9,
        transform: A.Compose | None = None,
        seed: int = 0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        label_dtype: LabelFormat | torch.dtype = "packed",
    ):
        if cache.resolution is not None:
            raise ValueError(f"{cache.path}: stage 2 crops need a native-resolution cache")
        super().__init__(cache, indices, transform, seed, mean, std, label_dtype)
        self.crop_size = int(crop_size)
        self.crops_per_image = int(crops_per_image)
        self.bone_fraction = float(bone_fraction)

    def __len__(self) -> int:
        return len(self.indices) * self.crops_per_image

    def _bone_pixel(self, k: int, cls: int, rng: np.random.Generator) -> tuple[int, int]:
        """A pixel drawn uniformly from class ``cls`` of cache image ``k`` (searched within its bounding box)."""
        y0, x0, y1, x1 = (int(v) for v in self.cache.boxes[k, cls])
        region = self.cache.mask(k)[y0:y1, x0:x1]
        hits = np.flatnonzero((region >> np.uint32(cls)) & np.uint32(1))
        j = int(hits[rng.integers(hits.size)])
        return y0 + j // (x1 - x0), x0 + j % (x1 - x0)

    def crop_window(self, i: int, rng: np.random.Generator | None = None) -> CropWindow:
        """The crop of item ``i`` in the current epoch (draws from ``rng``, by default the item's own)."""
        rng = item_rng(self.seed, self.epoch, i) if rng is None else rng
        k = self.indices[i // self.crops_per_image]
        h, w = self.cache.size(k)
        c = self.crop_size
        present = np.flatnonzero(self.cache.areas[k] > 0)
        if present.size and rng.random() < self.bone_fraction:
            cls = int(present[rng.integers(present.size)])
            cy, cx = self._bone_pixel(k, cls, rng)
            y0 = min(max(cy - c // 2, 0), max(h - c, 0))
            x0 = min(max(cx - c // 2, 0), max(w - c, 0))
            return CropWindow(k, y0, x0, cls)
        y0 = int(rng.integers(0, max(h - c, 0) + 1))
        x0 = int(rng.integers(0, max(w - c, 0) + 1))
        return CropWindow(k, y0, x0, -1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, i)
        win = self.crop_window(i, rng)
        c = self.crop_size
        image = self.cache.image(win.index)[win.y0 : win.y0 + c, win.x0 : win.x0 + c]
        packed = self.cache.mask(win.index)[win.y0 : win.y0 + c, win.x0 : win.x0 + c]
        if image.shape != (c, c):  # image smaller than the crop
            image = np.pad(image, ((0, c - image.shape[0]), (0, c - image.shape[1])))
            packed = np.pad(packed, ((0, c - packed.shape[0]), (0, c - packed.shape[1])))
        return self._finish(image, packed, rng)
