"""score_images on phantom data: counts against independently rasterised ground truth, shards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.classes import NUM_CLASSES
from handseg.format.metrics import dice_counts
from handseg.format.rasterize import rasterize
from handseg.inference.engine import Engine, eager_engine
from handseg.inference.pipeline import predict_probs, threshold_probs
from handseg.inference.scoring import score_images, score_sharded, shard
from handseg.inference.settings import InferenceCall, InferenceSettings
from handseg.model.factory import build_model
from handseg.model.io import InputSpec
from handseg.runtime.errors import DataFormatError


@pytest.fixture(scope="module")
def samples(phantom_root):
    return index_split(phantom_root, "train")[:3]


def _constant_engine(value: float) -> Engine:
    return Engine(fn=lambda x: torch.full((x.shape[0], NUM_CLASSES, x.shape[2] // 4, x.shape[3] // 4), value))


def _settings(mode: str = "resize") -> InferenceSettings:
    return InferenceSettings(input=InputSpec(mode=mode, image_size=128, tile_size=128, overlap=0.25))


def _gt_sums(sample) -> np.ndarray:
    image = read_image(sample.image_path)
    ann = read_annotation(sample.label_path)
    return rasterize(polygons_in_order(ann), image.shape).reshape(NUM_CLASSES, -1).sum(axis=1)


def test_empty_and_full_predictions_give_exact_counts(samples):
    empty = score_images(InferenceCall(_constant_engine(-20.0), _settings()), samples, progress=False)
    full = score_images(InferenceCall(_constant_engine(20.0), _settings()), samples, progress=False)
    assert empty.names == [s.rel for s in samples]
    assert empty.counts.shape == (len(samples), NUM_CLASSES, 3) and empty.counts.dtype == np.int64
    for i, sample in enumerate(samples):
        gt = _gt_sums(sample)
        h, w = read_image(sample.image_path).shape
        assert (gt > 0).all()  # every bone is drawn
        np.testing.assert_array_equal(empty.counts[i, :, 2], gt)
        np.testing.assert_array_equal(empty.counts[i, :, :2], 0)
        np.testing.assert_array_equal(full.counts[i], np.stack([gt, np.full(NUM_CLASSES, h * w), gt], axis=1))
    assert float(empty.per_image_dice.max()) < 1e-3
    np.testing.assert_allclose(full.per_image_dice[0], (2 * _gt_sums(samples[0]) + 1e-4)
                               / (_gt_sums(samples[0]) + np.prod(read_image(samples[0].image_path).shape) + 1e-4))


def test_same_numbers_as_predict_threshold_and_dice_by_hand(samples, tiny_upernet_cfg):
    torch.manual_seed(0)
    engine = eager_engine(build_model(tiny_upernet_cfg))
    settings = _settings("tile")
    result = score_images(InferenceCall(engine, settings, thresholds=0.5), samples, progress=False)
    for i, sample in enumerate(samples):
        image = read_image(sample.image_path)
        gt = rasterize(polygons_in_order(read_annotation(sample.label_path)), image.shape)
        pred = threshold_probs(predict_probs(engine, image, settings), 0.5).numpy()
        np.testing.assert_array_equal(result.counts[i], dice_counts(pred, gt))
    assert result.summary().n_images == len(samples)


def test_shards_cover_every_image_once_and_score_like_the_whole(samples):
    engine = _constant_engine(20.0)
    whole = score_images(InferenceCall(engine, _settings()), samples, progress=False)
    shards = [shard(samples, rank, 2) for rank in range(2)]
    assert sorted(s.rel for part in shards for s in part) == sorted(s.rel for s in samples)
    for part in shards:
        scored = score_images(InferenceCall(engine, _settings()), part, progress=False)
        rows = [whole.names.index(n) for n in scored.names]
        np.testing.assert_array_equal(scored.counts, whole.counts[rows])
    single = score_sharded(InferenceCall(engine, _settings()), samples)  # one process: the whole, in the original order
    assert single.names == whole.names
    np.testing.assert_array_equal(single.counts, whole.counts)


def test_sample_without_annotation_is_a_data_error(samples):
    unlabeled = dataclasses.replace(samples[0], label_path=None)
    with pytest.raises(DataFormatError, match="annotation"):
        score_images(InferenceCall(_constant_engine(0.0), _settings()), [unlabeled], progress=False)
