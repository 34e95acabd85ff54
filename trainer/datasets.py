"""The two training stages' datasets: whole images (stage 1) and native-resolution crops (stage 2).

Stage 1 (:class:`WholeImageDataset`) shows the model whole images resized to ``image_size``; stage 2
(:class:`CropDataset`) shows ``crop_size`` crops at native resolution, most of them centred on a bone.
Both read an :class:`~trainer.cache.ImageCache` (decoded once, memory-mapped), augment the image and its
bit-packed masks together (:mod:`trainer.transforms`) and return::

    {"pixel_values": (3, h, w) float32,   # handseg.model.io: the input spec's standardisation, as at inference
     "labels":       (h, w) int32}        # bit c = class c (CLASSES order, multi-label), see trainer.labels;
                                         # (29, h, w) float32/uint8 with data.label_dtype: float32/uint8

Determinism: every random choice for item ``i`` (crop position, augmentation) comes from a generator seeded
with ``(seed, epoch, i)``, so a sample does not depend on which loader worker or process draws it; call
``set_epoch`` every epoch (:func:`trainer.loader.set_epoch` does it for a loader).

A per-image intensity standardisation (``spec.intensity``) is fitted to the whole image the model's pass would see
at inference: stage 1's augmented image; for crops, the whole augmented native image they are cut from (so a crop
dataset with one augments the whole image first, as a cascade's does, and then crops).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from handseg.data.data_config import LabelFormat
from handseg.format.classes import NUM_CLASSES
from handseg.model.intensity import intensity_map
from handseg.model.io import InputSpec, model_input, to_pixel_values
from trainer.cache import ImageCache
from trainer.labels import label_format, to_labels
from trainer.transforms import apply_transforms


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one item in one epoch: independent of worker, process and draw order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), int(index)])


class _CachedDataset(Dataset):
    """Shared parts: cache, indices into it, augmentation, normalisation (``spec``: the input spec whose mean, std
    and intensity standardisation apply; None: ImageNet mean/std on ``/ 255``), epoch."""

    def __init__(
        self,
        cache: ImageCache,
        indices: Sequence[int] | None,
        transform: A.Compose | None,
        seed: int,
        spec: InputSpec | None,
        label_dtype: LabelFormat | torch.dtype,
    ):
        if not cache.has_masks:
            raise ValueError(f"{cache.path}: training needs annotated samples")
        self.cache = cache
        self.indices = list(range(len(cache))) if indices is None else [int(i) for i in indices]
        self.transform = transform
        self.seed = int(seed)
        self.spec = spec if spec is not None else InputSpec(mode="resize", image_size=1, tile_size=1)  # defaults
        self.label_dtype = label_format(label_dtype)
        # The epoch lives in shared memory: persistent loader workers (copies of this dataset) read the epoch
        # that the main process sets before each epoch's first batch is requested.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The current epoch (the items' generators are seeded with it)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def _finish(self, image: np.ndarray, packed: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        seed = int(rng.integers(0, 2**31 - 1))
        image, packed = apply_transforms(self.transform, image, packed, seed=seed)
        return {
            "pixel_values": model_input(image, self.spec),
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
        spec: InputSpec | None = None,
        label_dtype: LabelFormat | torch.dtype = "packed",
    ):
        super().__init__(cache, indices, transform, seed, spec, label_dtype)

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
    With a per-image intensity standardisation the whole image is augmented first and the crop placed on the
    augmented masks (:meth:`whole_then_crop`), so that the standardisation is fitted to the whole image.

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
        spec: InputSpec | None = None,
        label_dtype: LabelFormat | torch.dtype = "packed",
    ):
        if cache.resolution is not None:
            raise ValueError(f"{cache.path}: stage 2 crops need a native-resolution cache")
        super().__init__(cache, indices, transform, seed, spec, label_dtype)
        self.crop_size = int(crop_size)
        self.crops_per_image = int(crops_per_image)
        self.bone_fraction = float(bone_fraction)

    def __len__(self) -> int:
        return len(self.indices) * self.crops_per_image

    def crop_window(self, i: int, rng: np.random.Generator | None = None) -> CropWindow:
        """The crop of item ``i`` in the current epoch (draws from ``rng``, by default the item's own)."""
        rng = item_rng(self.seed, self.epoch, i) if rng is None else rng
        k = self.indices[i // self.crops_per_image]
        present = np.flatnonzero(self.cache.areas[k] > 0)

        def pixel(cls: int) -> tuple[int, int]:  # searched within the class's bounding box
            y0, x0, y1, x1 = (int(v) for v in self.cache.boxes[k, cls])
            cy, cx = bone_pixel(self.cache.mask(k)[y0:y1, x0:x1], cls, rng)
            return y0 + cy, x0 + cx

        y0, x0, cls = place_crop(self.cache.size(k), self.crop_size, present, pixel, rng, self.bone_fraction)
        return CropWindow(k, y0, x0, cls)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = item_rng(self.seed, self.epoch, i)
        if self.spec.intensity.per_image:
            return self.whole_then_crop(i, rng)[0]
        win = self.crop_window(i, rng)
        image, packed = cut(self.cache.image(win.index), self.cache.mask(win.index), win.y0, win.x0, self.crop_size)
        return self._finish(image, packed, rng)

    def whole_then_crop(self, i: int, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Item ``i`` cut from its whole image augmented first: the crop placed on the augmented masks (as
        :meth:`crop_window` places it on the cached ones), its pixel values standardised by the map fitted to the
        whole augmented image. Returns the item, with ``window`` (4,) float32 = (y0, x0, H, W), where the crop lies
        in the H x W image, and the whole augmented (H, W) uint8 image."""
        k = self.indices[i // self.crops_per_image]
        image, packed = apply_transforms(self.transform, self.cache.image(k), self.cache.mask(k),
                                         seed=int(rng.integers(0, 2**31 - 1)))
        bits = int(np.bitwise_or.reduce(packed, axis=None))
        present = np.array([c for c in range(NUM_CLASSES) if bits >> c & 1], dtype=np.int64)
        y0, x0, _ = place_crop(image.shape, self.crop_size, present, lambda c: bone_pixel(packed, c, rng), rng,
                               self.bone_fraction)
        fitted = intensity_map(image, self.spec.intensity)
        crop, labels = cut(fitted.image, packed, y0, x0, self.crop_size)
        item = {"pixel_values": to_pixel_values(crop, self.spec.mean, self.spec.std, lut=fitted.lut),
                "labels": to_labels(labels, self.label_dtype),
                "window": torch.tensor([y0, x0, *image.shape], dtype=torch.float32)}
        return item, image


class CascadeCropDataset(CropDataset):
    """Stage 2 of a cascade: the whole native image is augmented first, so that stage 1 (the prior) sees exactly
    the image the crop is cut from; the crop is then placed on the augmented masks (:meth:`whole_then_crop`).
    Besides ``pixel_values``, ``labels`` and ``window`` of the crop, returns ``prior_pixel_values`` (3, S, S)
    float32, the augmented image resized to the prior's side S as inference resizes it, normalised as the prior's
    input spec (``spec.prior``) says.
    """

    def __init__(self, cache: ImageCache, crop_size: int, indices: Sequence[int] | None = None,
                 crops_per_image: int = 1, bone_fraction: float = 0.9, transform: A.Compose | None = None,
                 seed: int = 0, spec: InputSpec | None = None, label_dtype: LabelFormat | torch.dtype = "packed"):
        if spec is None or spec.prior is None:
            raise ValueError("a cascade's crops need the input spec of stage 2 with its prior's (spec.prior)")
        super().__init__(cache, crop_size, indices, crops_per_image, bone_fraction, transform, seed, spec,
                         label_dtype)
        self.prior_size = spec.prior.image_size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item, image = self.whole_then_crop(i, item_rng(self.seed, self.epoch, i))
        small = cv2.resize(image, (self.prior_size, self.prior_size), interpolation=cv2.INTER_AREA)
        item["prior_pixel_values"] = model_input(small, self.spec.prior)
        return item


def bone_pixel(packed: np.ndarray, cls: int, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel (y, x) drawn uniformly from class ``cls`` of (h, w) uint32 bit-packed masks (the class is present)."""
    hits = np.flatnonzero((packed >> np.uint32(cls)) & np.uint32(1))
    j = int(hits[rng.integers(hits.size)])
    return j // packed.shape[1], j % packed.shape[1]


def place_crop(hw: tuple[int, int], crop: int, present: np.ndarray, pixel, rng: np.random.Generator,
               bone_fraction: float) -> tuple[int, int, int]:
    """(y0, x0, class) of a ``crop`` square in an ``hw`` image: with probability ``bone_fraction`` centred on a
    pixel of a class drawn uniformly from ``present`` (``pixel(class)`` draws it; the crop is shifted inside the
    image, the pixel stays inside), otherwise placed uniformly (class -1)."""
    h, w = int(hw[0]), int(hw[1])
    if present.size and rng.random() < bone_fraction:
        cls = int(present[rng.integers(present.size)])
        cy, cx = pixel(cls)
        return min(max(cy - crop // 2, 0), max(h - crop, 0)), min(max(cx - crop // 2, 0), max(w - crop, 0)), cls
    return int(rng.integers(0, max(h - crop, 0) + 1)), int(rng.integers(0, max(w - crop, 0) + 1)), -1


def cut(image: np.ndarray, packed: np.ndarray, y0: int, x0: int, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``crop`` square at (y0, x0) of an image and its packed masks, zero-padded at the bottom/right where the
    image is smaller than the crop."""
    image, packed = image[y0:y0 + crop, x0:x0 + crop], packed[y0:y0 + crop, x0:x0 + crop]
    if image.shape != (crop, crop):
        pad = ((0, crop - image.shape[0]), (0, crop - image.shape[1]))
        image, packed = np.pad(image, pad), np.pad(packed, pad)
    return image, packed
