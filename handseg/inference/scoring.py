"""Competition Dice of an engine on annotated images: the scoring that training's validation and the evaluator share.

Each image goes through :func:`handseg.inference.pipeline.predict_masks` with one
:class:`~handseg.inference.settings.InferenceCall` (engine, settings, device, thresholds, post-processing;
thresholded at the original size, inside each class's box) and is compared with the ground truth rasterised from
its JSON at the native size (never a resized mask), class by class in its own box
(:meth:`handseg.format.class_masks.ClassMasks.from_polygons`), so neither side is ever a (29, H, W) array.
Per-image counts ``[intersection, pred_sum, target_sum]`` are returned so that processes that each scored a shard
can gather them exactly (:func:`score_sharded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
from tqdm.auto import tqdm

from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import NUM_CLASSES
from handseg.format.metrics import DiceSummary, dice_from_counts, summarize_dice
from handseg.format.rasterize import rasterize
from handseg.inference.pipeline import predict_masks
from handseg.inference.settings import InferenceCall
from handseg.runtime.errors import DataFormatError

if TYPE_CHECKING:
    from handseg.data.dataset_index import Sample


@dataclass
class ScoreResult:
    """Per-image results: ``names`` (the samples' ``rel`` paths), ``counts`` (N, 29, 3) int64 and
    ``per_image_dice`` (N, 29) float64."""

    names: list[str]
    counts: np.ndarray
    per_image_dice: np.ndarray

    def summary(self) -> DiceSummary:
        """Per-class mean over images, then the mean over classes (the competition score)."""
        return summarize_dice(self.per_image_dice)


def ground_truth_polygons(sample: "Sample", image_hw: tuple[int, int]) -> list[np.ndarray]:
    """The 29 polygons of the sample's JSON in CLASSES order (checked against the image size)."""
    if sample.label_path is None:
        raise DataFormatError(sample.image_path, "no annotation JSON for this image")
    return polygons_in_order(read_annotation(sample.label_path, image_hw=image_hw))


def ground_truth(sample: "Sample", image_hw: tuple[int, int]) -> np.ndarray:
    """(29, H, W) uint8 masks rasterised from the sample's JSON at the image's native size (for pictures; scoring
    uses :func:`ground_truth_masks`)."""
    return rasterize(ground_truth_polygons(sample, image_hw), src_hw=image_hw, out_hw=image_hw)


def ground_truth_masks(sample: "Sample", image_hw: tuple[int, int]) -> ClassMasks:
    """The sample's 29 masks at native size, each rasterised in its own box."""
    return ClassMasks.from_polygons(ground_truth_polygons(sample, image_hw), image_hw)


def score_images(call: InferenceCall, samples: Sequence["Sample"], progress: bool = True) -> ScoreResult:
    """Dice counts of ``call``'s masks (its engine, settings, device, thresholds and post-processing) on annotated
    ``samples`` at their original resolution.

    An eager model must be in eval mode (``model.eval()``) before it is wrapped as the engine.
    """
    names: list[str] = []
    counts = np.zeros((len(samples), NUM_CLASSES, 3), dtype=np.int64)
    for i, sample in enumerate(tqdm(samples, desc="validate", unit="img", disable=not progress)):
        image = read_image(sample.image_path)
        truth = ground_truth_masks(sample, image.shape)
        pred = predict_masks(call, image)
        counts[i] = pred.counts(truth)
        names.append(sample.rel)
    return ScoreResult(names=names, counts=counts, per_image_dice=dice_from_counts(counts))


def shard(items: Sequence, rank: int, world: int) -> list:
    """Process ``rank`` of ``world`` takes items ``[rank::world]``."""
    return list(items[rank::world])


def gather_rows(rows: list, accelerator=None) -> list:
    """All processes' rows on every process (concatenated in rank order); identity without Accelerate."""
    if accelerator is None or accelerator.num_processes == 1:
        return list(rows)
    from accelerate.utils import gather_object

    return list(gather_object(rows))


def score_sharded(call: InferenceCall, samples: Sequence["Sample"], accelerator=None) -> ScoreResult:
    """ScoreResult over all ``samples`` (original order) on every process: process ``rank`` of ``world``
    scores ``samples[rank::world]``, the per-image counts are gathered and put back in order. Training's
    validation and the evaluator both call this; without ``accelerator`` it is :func:`score_images`."""
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    mine = shard(samples, rank, world)
    index = list(range(len(samples)))[rank::world]
    is_main = accelerator is None or accelerator.is_main_process
    res = score_images(call, mine, progress=is_main)
    rows = [(i, name, counts) for i, name, counts in zip(index, res.names, np.asarray(res.counts))]
    rows = sorted(gather_rows(rows, accelerator), key=lambda r: r[0])
    counts = np.stack([r[2] for r in rows]).astype(np.int64) if rows else np.zeros((0, NUM_CLASSES, 3), np.int64)
    return ScoreResult(names=[r[1] for r in rows], counts=counts, per_image_dice=dice_from_counts(counts))
