"""The training DataLoader: the stage's dataset over a cached fold, a sampler reseeded every epoch, workers.

The order comes from the sampler: :class:`EpochRandomSampler` (a ``RandomSampler`` reseeded with seed + epoch;
Accelerate's ``use_seedable_sampler`` swaps it for its own ``SeedableRandomSampler``, which does the same).
:func:`epoch_loader` positions a loader at an epoch before it is iterated: the sampler and the dataset (whose
items draw from generators seeded by (seed, epoch, index)) and the loader's own generator. The loader has its own
generator so that starting an iterator never draws from torch's global one (which dropout uses): a resumed run
that starts its iterator mid-epoch then draws exactly what the uninterrupted run drew. A resumed epoch skips the
batches already trained at the sampler, without loading them. Workers are persistent: started once, they read
the epoch from the dataset's shared memory when an epoch's iterator hands them its first indices, so an epoch
costs no worker start-up (about 0.4 s each on a 2-core CPU) and draws what fresh workers would draw.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import cv2
import numpy as np
import torch
from accelerate.data_loader import skip_first_batches
from torch.utils.data import DataLoader, Dataset, RandomSampler

from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import Sample
from handseg.model.io import InputSpec
from trainer.cache import ImageCache
from trainer.datasets import CascadeCropDataset, CropDataset, WholeImageDataset
from trainer.transforms import build_transforms


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
    """Set the epoch of every sampler in a loader's chain (a plain DataLoader, one prepared by Accelerate, one that
    skips batches) and of its dataset, and reseed the loader's own generator with the dataset's seed + epoch."""
    if hasattr(loader, "iteration"):  # Accelerate's loaders re-apply their own epoch counter when iterated
        loader.iteration = epoch
    pending, seen = [getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)], set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if hasattr(node, "set_epoch"):
            node.set_epoch(epoch)
        pending += [getattr(node, "batch_sampler", None), getattr(node, "sampler", None)]
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(int(getattr(loader.dataset, "seed", 0)) + epoch)


def epoch_loader(loader: Any, epoch: int, skip: int = 0) -> Any:
    """``loader`` positioned at ``epoch`` (:func:`set_epoch`); with ``skip`` > 0 a loader over the same data that
    starts after the first ``skip`` batches of the epoch (a resumed epoch), skipped in the sampler, not loaded."""
    set_epoch(loader, epoch)
    if skip <= 0:
        return loader
    skipping = skip_first_batches(loader, skip)
    set_epoch(skipping, epoch)
    return skipping


def seed_worker(worker_id: int) -> None:
    """Worker init: seed numpy/random from torch's per-worker seed (items draw from their own generators)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def open_cache(cfg: DataConfig, samples: Sequence[Sample], stage: Literal[1, 2], progress: bool = True) -> ImageCache:
    """The stage's cache of ``samples`` (built now when it is missing or damaged): stage 1 at ``image_size``,
    stage 2 at native resolution."""
    return ImageCache(list(samples), cfg.cache_dir, cfg.image_size if stage == 1 else None, progress=progress)


@dataclass(frozen=True)
class DatasetOptions:
    """How :func:`build_dataset` builds a stage's dataset: ``cache_samples`` (None: the samples themselves): what
    the cache holds, e.g. the whole split, so that every fold shares one cache; ``seed`` of the items' generators
    (None: the config's); ``spec``: the model's input spec (normalisation; None: ImageNet mean/std on ``/ 255``);
    ``augment``: apply the config's augmentations; ``progress``: show the cache build's progress bar."""

    cache_samples: Sequence[Sample] | None = None
    seed: int | None = None
    spec: InputSpec | None = None
    augment: bool = True
    progress: bool = True


def build_dataset(cfg: DataConfig, samples: Sequence[Sample], stage: Literal[1, 2],
                  options: DatasetOptions = DatasetOptions()) -> WholeImageDataset | CropDataset:
    """The stage's dataset over ``samples``, building (or opening) its cache (see :class:`DatasetOptions`).

    Stage 1 caches at ``image_size``; stage 2 at native resolution. A stage-2 ``options.spec`` with a ``prior`` is
    a cascade, whose items also carry the augmented image at its stage 1's input side. In a multi-process run
    every process may call this: the first builds the cache under a file lock and the others open it; pass
    ``DatasetOptions(progress=accelerator.is_main_process)``.
    """
    spec, cache_samples = options.spec, options.cache_samples
    cache = open_cache(cfg, samples if cache_samples is None else cache_samples, stage, options.progress)
    indices = [cache.index_of(s.rel) for s in samples]
    transform = build_transforms(cfg.augmentations) if options.augment else None
    seed = cfg.seed if options.seed is None else options.seed
    if stage == 1:
        return WholeImageDataset(cache, indices, transform, seed, spec, cfg.label_dtype)
    if stage == 2:
        kind = CascadeCropDataset if spec is not None and spec.prior is not None else CropDataset
        return kind(cache, cfg.crop_size, indices, cfg.crops_per_image, cfg.bone_fraction, transform, seed, spec,
                    cfg.label_dtype)
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def build_train_loader(cfg: DataConfig, dataset: WholeImageDataset | CropDataset,
                       drop_last: bool = False) -> DataLoader:
    """The training DataLoader over a stage's dataset (:func:`build_dataset`): shuffled by
    :class:`EpochRandomSampler` with the dataset's seed, ``cfg.num_workers`` persistent workers, batches of
    dict(pixel_values (B, 3, h, w) float32, labels (B, h, w) int32 packed or (B, 29, h, w) float32/uint8 per
    ``cfg.label_dtype``); unpack with :func:`trainer.labels.labels_to_float`. Iterate it through
    :func:`epoch_loader` (or call :func:`set_epoch` before each epoch).
    """
    if len(dataset) == 0:
        raise ValueError("no training samples")
    if cfg.num_workers > 0:
        # OpenCV's thread pool does not survive fork(): a worker forked after the parent used it can deadlock
        # in its first cv2 call. Workers parallelise already, so OpenCV runs single-threaded from here on.
        cv2.setNumThreads(0)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=EpochRandomSampler(dataset, dataset.seed),
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker if cfg.num_workers > 0 else None,
        persistent_workers=cfg.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(dataset.seed),  # its own: iterators never draw from the global one
    )
