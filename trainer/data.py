"""Training data: the ``data:`` section of a training YAML, the fold split, and the two stages' datasets.

Stage 1 (:class:`WholeImageDataset`) shows the model whole images resized to ``image_size``; stage 2
(:class:`CropDataset`) shows ``crop_size`` crops at native resolution, most of them centred on a bone.
Both read an :class:`~handseg.cache.ImageCache` (decoded once, memory-mapped), augment the image and its
bit-packed masks together (:mod:`handseg.transforms`) and return::

    {"pixel_values": (3, h, w) float32,   # gray/255 replicated to 3 channels, normalised by mean/std
     "labels":       (h, w) int32}        # bit c = class c (CLASSES order, multi-label), see trainer.labels;
                                         # (29, h, w) float32/uint8 with data.label_dtype: float32/uint8

The training step turns a label batch of any format into (B, 29, h, w) float32 on its device with
:func:`trainer.labels.labels_to_float`.

Determinism: every random choice for item ``i`` (crop position, augmentation) comes from a generator seeded
with ``(seed, epoch, i)``, so a sample does not depend on which loader worker or process draws it. The
order comes from the sampler: :class:`EpochRandomSampler` (a ``RandomSampler`` reseeded with seed + epoch;
Accelerate's ``use_seedable_sampler`` swaps it for its own ``SeedableRandomSampler``, which does the same).
Call :func:`set_epoch` at the start of every epoch: it reaches the sampler and the dataset, also after
``accelerator.prepare``. Workers are not persistent, so each epoch's workers start with the new epoch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Sequence

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from handseg.cache import ImageCache
from handseg.dataset_index import Sample, assign_folds, index_split, read_meta, split_fold
from handseg.errors import ConfigError
from handseg.models import IMAGENET_MEAN, IMAGENET_STD
from handseg.transforms import apply_transforms, build_transforms
from trainer.labels import LabelFormat, label_format, to_labels

PHANTOM_HINT = (
    "create phantom data with `python scripts/make_phantom.py --out data/phantom --train-ids 40 --test-ids 10` "
    "(or `make demo`), or set data.data_root to your copy of the data"
)


@dataclass
class DataConfig:
    """The ``data:`` section of a training YAML.

    ``image_size``: stage 1 whole-image side; ``crop_size``: stage 2 native crop side; ``crops_per_image``:
    stage 2 crops per image per epoch; ``bone_fraction``: share of stage 2 crops centred on a bone pixel (the
    rest are placed uniformly at random); ``seed``: fold assignment and augmentation; ``stratify``: a
    meta-data column (e.g. ``sex``) to balance folds on; ``augmentations``: albumentations list (see
    :mod:`handseg.transforms`); ``label_dtype``: ``packed`` (default) keeps the masks bit-packed, (h, w)
    int32, unpacked on the training device (a (29, 1024, 1024) crop is 121 MB in float32, 4 MB packed);
    ``float32`` / ``uint8`` unpack in the loader (see :mod:`trainer.labels`).
    """

    data_root: Path
    fold: int = 0
    n_folds: int = 5
    seed: int = 0
    stratify: str | None = None
    image_size: int = 512
    crop_size: int = 1024
    crops_per_image: int = 4
    bone_fraction: float = 0.9
    batch_size: int = 8
    num_workers: int = 2
    label_dtype: LabelFormat = "packed"
    cache_dir: Path = Path(".cache/handseg")
    augmentations: list[dict[str, Any]] = field(default_factory=list)

    def validate(self) -> None:
        if self.n_folds < 2:
            raise ValueError(f"n_folds: must be >= 2, got {self.n_folds}")
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"fold: must be in [0, {self.n_folds - 1}], got {self.fold}")
        for key in ("image_size", "crop_size", "crops_per_image", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.bone_fraction <= 1.0:
            raise ValueError(f"bone_fraction: must be in [0, 1], got {self.bone_fraction}")
        try:
            build_transforms(self.augmentations)
        except ConfigError as exc:  # re-keyed by the config loader: data.augmentations[i].name
            raise ValueError(f"{exc.key}: {exc.problem}") from None


@dataclass
class DataSplit:
    """The train split of a data root and one fold of it (patients never straddle train and val)."""

    samples: list[Sample]  # every annotated image, sorted by relative path
    train: list[Sample]
    val: list[Sample]
    folds: dict[str, int]  # patient id -> fold


def load_split(cfg: DataConfig, file: str | Path = "<config>", key: str = "data") -> DataSplit:
    """Index ``cfg.data_root``, assign patients to folds and split off ``cfg.fold``.

    Raises ConfigError(file, "data.data_root") when the folder is missing (with how to make phantom data) and
    ConfigError(file, "data.fold") when the fold leaves no training or no validation image.
    """
    root = Path(cfg.data_root)
    if not root.is_dir():
        raise ConfigError(file, f"{key}.data_root", f"folder {root} not found; {PHANTOM_HINT}")
    samples = index_split(root, "train")
    meta = read_meta(root) if cfg.stratify else None
    try:
        folds = assign_folds(samples, n_folds=cfg.n_folds, seed=cfg.seed, stratify=cfg.stratify, meta=meta)
    except ValueError as exc:  # too few persons for the folds (a fold would be empty), or a bad stratify column
        if "stratify" in str(exc):
            raise ConfigError(file, f"{key}.stratify", str(exc)) from None
        raise ConfigError(file, f"{key}.n_folds", f"{exc} (a fold would be empty)") from None
    train, val = split_fold(samples, folds, cfg.fold)
    n_patients = len(set(folds))
    for name, part in (("training", train), ("validation", val)):
        if not part:
            raise ConfigError(
                file,
                f"{key}.fold",
                f"fold {cfg.fold} of {cfg.n_folds} leaves no {name} images ({len(samples)} images of "
                f"{n_patients} patients in {root}); use fewer folds or more data",
            )
    return DataSplit(samples=samples, train=train, val=val, folds=folds)


# ------------------------------------------------------------------------------------------------ tensors
def to_pixel_values(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(h, w) uint8 -> (3, h, w) float32: /255, replicated to three channels, (x - mean[c]) / std[c]."""
    image = np.ascontiguousarray(image)
    if not image.flags.writeable:  # a read-only memory-mapped view (no augmentation changed it)
        image = image.copy()
    x = torch.from_numpy(image).to(torch.float32).div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x.unsqueeze(0) - m) / s


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


# ------------------------------------------------------------------------------------------------ loader
class EpochRandomSampler(RandomSampler):
    """A RandomSampler whose permutation depends only on (seed, epoch); ``set_epoch`` selects the epoch."""

    def __init__(self, data_source: Dataset, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        yield from super().__iter__()


def set_epoch(loader: Any, epoch: int) -> None:
    """Set the epoch of a loader's sampler and dataset (a plain DataLoader or one prepared by Accelerate)."""
    if hasattr(loader, "set_epoch"):  # accelerate's DataLoaderShard / DataLoaderDispatcher
        loader.set_epoch(epoch)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


def seed_worker(worker_id: int) -> None:
    """Worker init: seed numpy/random from torch's per-worker seed (items draw from their own generators)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_dataset(
    cfg: DataConfig,
    samples: Sequence[Sample],
    stage: Literal[1, 2],
    *,
    cache_samples: Sequence[Sample] | None = None,
    seed: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: bool = True,
    progress: bool = True,
) -> WholeImageDataset | CropDataset:
    """The stage's dataset over ``samples``, building (or opening) its cache.

    ``cache_samples`` (default ``samples``): what the cache holds, e.g. the whole split, so that every fold
    shares one cache. Stage 1 caches at ``image_size``; stage 2 at native resolution.
    """
    cache_samples = list(samples if cache_samples is None else cache_samples)
    resolution = cfg.image_size if stage == 1 else None
    cache = ImageCache(cache_samples, cfg.cache_dir, resolution, progress=progress)
    indices = [cache.index_of(s.rel) for s in samples]
    transform = build_transforms(cfg.augmentations) if augment else None
    seed = cfg.seed if seed is None else seed
    if stage == 1:
        return WholeImageDataset(cache, indices, transform, seed, mean, std, cfg.label_dtype)
    if stage == 2:
        return CropDataset(
            cache, cfg.crop_size, indices, cfg.crops_per_image, cfg.bone_fraction, transform, seed, mean, std,
            cfg.label_dtype,
        )
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def build_train_loader(
    cfg: DataConfig,
    samples: Sequence[Sample],
    stage: Literal[1, 2],
    *,
    cache_samples: Sequence[Sample] | None = None,
    seed: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    augment: bool = True,
    progress: bool = True,
    drop_last: bool = False,
) -> DataLoader:
    """The training DataLoader of a stage: shuffled by :class:`EpochRandomSampler`, ``cfg.num_workers``
    non-persistent workers, batches of dict(pixel_values (B, 3, h, w) float32, labels (B, h, w) int32 packed
    or (B, 29, h, w) float32/uint8 per ``cfg.label_dtype``); unpack with :func:`trainer.labels.labels_to_float`.

    In a multi-process run every process may call this: the first builds the cache under a file lock and the
    others open it; pass ``progress=accelerator.is_main_process``. Call :func:`set_epoch` before each epoch.
    """
    if not samples:
        raise ValueError("no training samples")
    seed = cfg.seed if seed is None else seed
    dataset = build_dataset(
        cfg, samples, stage, cache_samples=cache_samples, seed=seed, mean=mean, std=std,
        augment=augment, progress=progress,
    )
    if cfg.num_workers > 0:
        # OpenCV's thread pool does not survive fork(): a worker forked after the parent used it can deadlock
        # in its first cv2 call. Workers parallelise already, so OpenCV runs single-threaded from here on.
        cv2.setNumThreads(0)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=EpochRandomSampler(dataset, seed),
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker if cfg.num_workers > 0 else None,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )
