"""Training data on phantom files: config checks, fold split, both stages' datasets, label formats, loaders
with workers."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from handseg.data.data_config import DataConfig
from handseg.data.dataset_index import load_split
from handseg.format.rasterize import unpack_bits
from handseg.model.intensity import Intensity
from handseg.model.io import IMAGENET_MEAN, IMAGENET_STD, InputSpec, model_input
from handseg.runtime.config_schema import load_config
from handseg.runtime.errors import ConfigError
from trainer.datasets import CascadeCropDataset, CropDataset, WholeImageDataset, item_rng
from trainer.labels import labels_to_float
from trainer.loader import DatasetOptions, build_dataset, build_train_loader, set_epoch
from trainer.transforms import apply_transforms


@dataclass
class Schema:
    data: DataConfig


UNAUGMENTED = DatasetOptions(augment=False, progress=False)  # items without augmentation, no progress bar


def data_cfg(root: Path, tmp_path: Path, **kw) -> DataConfig:
    base = dict(
        data_root=root, n_folds=4, image_size=64, crop_size=64, crops_per_image=3, batch_size=2,
        num_workers=0, cache_dir=tmp_path / "cache",
    )
    base.update(kw)
    return DataConfig(**base)


def unpacked(labels: torch.Tensor) -> torch.Tensor:
    """One item's packed (h, w) int32 labels -> (29, h, w) float32."""
    return labels_to_float(labels[None])[0]


@pytest.fixture()
def split(phantom_root, tmp_path):
    return load_split(data_cfg(phantom_root, tmp_path))


def test_config_from_yaml_and_its_errors(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("data:\n  data_root: data/phantom\n  augmentations:\n    - {name: HorizontalFlip, p: 0.5}\n")
    cfg = load_config(path, Schema).data
    assert cfg.data_root == Path("data/phantom") and cfg.cache_dir == Path(".cache/handseg")
    assert (cfg.fold, cfg.n_folds, cfg.bone_fraction, cfg.label_dtype) == (0, 5, 0.9, "packed")
    for bad, key in [
        ("  bone_fraction: 1.5\n", "data.bone_fraction"),
        ("  fold: 5\n", "data.fold"),
        ("  crop_size: 0\n", "data.crop_size"),
        ("  batchsize: 4\n", "data.batchsize"),
        ("  label_dtype: int32\n", "data.label_dtype"),
    ]:
        path.write_text("data:\n  data_root: data/phantom\n" + bad)
        with pytest.raises(ConfigError) as info:
            load_config(path, Schema)
        assert info.value.key == key and info.value.file == path


def test_missing_data_root_and_empty_fold_are_config_errors(phantom_root, tmp_path):
    with pytest.raises(ConfigError) as info:
        load_split(data_cfg(tmp_path / "nowhere", tmp_path), file="train.yaml")
    assert info.value.key == "data.data_root" and "scripts/make_phantom.py --out data/phantom" in str(info.value)
    with pytest.raises(ConfigError) as info:  # 4 persons cannot fill 5 folds: one fold would be empty
        load_split(data_cfg(phantom_root, tmp_path, n_folds=5), file="train.yaml")
    assert info.value.key == "data.n_folds" and "empty" in info.value.problem


def test_split_keeps_persons_together(split):
    assert len(split.samples) == 8 and len(split.train) == 6 and len(split.val) == 2
    assert not {s.patient_id for s in split.train} & {s.patient_id for s in split.val}


def test_whole_image_items_are_normalised_cache_images(split, phantom_root, tmp_path):
    cfg = data_cfg(phantom_root, tmp_path)
    ds = build_dataset(cfg, split.train, 1, DatasetOptions(cache_samples=split.samples, augment=False, progress=False))
    assert isinstance(ds, WholeImageDataset) and len(ds) == 6
    item = ds[1]
    k = ds.indices[1]
    assert ds.cache.samples[k] == split.train[1]
    x, packed = item["pixel_values"], item["labels"]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert packed.shape == (64, 64) and packed.dtype == torch.int32  # the default: bit-packed
    gray = torch.from_numpy(np.array(ds.cache.image(k))).float() / 255
    for c in range(3):
        torch.testing.assert_close(x[c], (gray - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    np.testing.assert_array_equal(packed.numpy().view(np.uint32), np.array(ds.cache.mask(k)))
    y = unpacked(packed)
    np.testing.assert_array_equal(y.numpy(), unpack_bits(np.array(ds.cache.mask(k)), 29))
    assert 0 < y.mean() < 0.5
    for fmt, dtype in (("float32", torch.float32), ("uint8", torch.uint8)):
        other = build_dataset(replace(cfg, label_dtype=fmt), split.train, 1, UNAUGMENTED)[1]
        assert other["labels"].shape == (29, 64, 64) and other["labels"].dtype == dtype
        assert torch.equal(other["labels"].float(), y)


def test_crops_are_native_and_mostly_bone(split, phantom_root, tmp_path):
    cfg = data_cfg(phantom_root, tmp_path, crop_size=48, crops_per_image=50, bone_fraction=0.7)
    ds = build_dataset(cfg, split.train, 2, UNAUGMENTED)
    assert isinstance(ds, CropDataset) and len(ds) == 300 and ds.cache.resolution is None
    windows = [ds.crop_window(i) for i in range(len(ds))]
    centred = np.array([w.cls >= 0 for w in windows])
    assert abs(centred.mean() - 0.7) < 0.1  # binomial(300, 0.7): sd 0.026
    assert len({w.cls for w in windows if w.cls >= 0}) >= 20  # classes drawn evenly, small ones too
    for i in range(0, 300, 7):
        item, w = ds[i], windows[i]
        assert item["pixel_values"].shape == (3, 48, 48) and item["labels"].shape == (48, 48)
        native = np.array(ds.cache.image(w.index)[w.y0 : w.y0 + 48, w.x0 : w.x0 + 48])
        expected = (torch.from_numpy(native).float() / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
        torch.testing.assert_close(item["pixel_values"][0], expected)
        if w.cls >= 0:
            assert unpacked(item["labels"])[w.cls].sum() > 0  # the crop holds the class it was centred on
    all_bone = build_dataset(replace(cfg, bone_fraction=1.0), split.train, 2, UNAUGMENTED)
    assert all(unpacked(all_bone[i]["labels"]).amax(dim=0).mean() > 0.05 for i in range(0, 300, 10))


def test_items_are_deterministic_for_seed_and_epoch(split, phantom_root, tmp_path):
    cfg = data_cfg(phantom_root, tmp_path, augmentations=[{"name": "Affine", "rotate": [-20, 20], "p": 1.0}])
    a = build_dataset(cfg, split.train, 2, DatasetOptions(progress=False))
    b = build_dataset(cfg, split.train, 2, DatasetOptions(progress=False))
    for i in (0, 5, 17):
        torch.testing.assert_close(a[i]["pixel_values"], b[i]["pixel_values"])
        torch.testing.assert_close(a[i]["labels"], b[i]["labels"])
    before = [a.crop_window(i) for i in range(18)]
    a.set_epoch(1)
    assert [a.crop_window(i) for i in range(18)] != before
    other_seed = build_dataset(cfg, split.train, 2, DatasetOptions(seed=1, progress=False))
    assert [other_seed.crop_window(i) for i in range(18)] != before


def batches(loader, epoch):
    set_epoch(loader, epoch)
    return [(b["pixel_values"].clone(), b["labels"].clone()) for b in loader]


def test_loader_with_two_workers_matches_the_in_process_loader(split, phantom_root, tmp_path):
    aug = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomBrightnessContrast", "p": 0.5}]
    for stage in (1, 2):
        cfg = data_cfg(phantom_root, tmp_path, augmentations=aug, crops_per_image=1)
        options = DatasetOptions(cache_samples=split.samples, progress=False)
        plain = build_train_loader(cfg, build_dataset(cfg, split.train, stage, options))
        workers = build_train_loader(replace(cfg, num_workers=2), build_dataset(cfg, split.train, stage, options))
        # The same persistent workers serve three epochs (started once); each epoch draws what the in-process
        # loader draws for it, the epoch reaching the workers through the dataset's shared memory.
        pids = None
        for epoch in (3, 4, 3):
            got = batches(workers, epoch)
            pids = pids or [w.pid for w in workers._iterator._workers]
            want = batches(plain, epoch)
            assert len(got) == 3 and got[0][0].shape == (2, 3, 64, 64) and got[0][1].shape == (2, 64, 64)
            for (x1, y1), (x2, y2) in zip(got, want):
                torch.testing.assert_close(x1, x2)
                torch.testing.assert_close(y1, y2)
            assert workers.dataset.epoch == epoch
        assert [w.pid for w in workers._iterator._workers] == pids  # no worker restarted
        assert any(not torch.equal(a[0], b[0]) for a, b in zip(batches(plain, 4), batches(plain, 3)))


def test_packed_label_batches_unpack_to_the_float_label_batches(split, phantom_root, tmp_path):
    aug = [{"name": "Affine", "rotate": [-20, 20], "p": 1.0}, {"name": "HorizontalFlip", "p": 0.5}]
    for stage in (1, 2):
        cfg = data_cfg(phantom_root, tmp_path, augmentations=aug, crops_per_image=2)
        dense_cfg = replace(cfg, label_dtype="float32")
        options = DatasetOptions(cache_samples=split.samples, progress=False)
        packed = build_train_loader(cfg, build_dataset(cfg, split.train, stage, options))
        dense = build_train_loader(dense_cfg, build_dataset(dense_cfg, split.train, stage, options))
        got, want = batches(packed, 1), batches(dense, 1)
        assert len(got) == len(want) == (3 if stage == 1 else 6)
        for (x1, y1), (x2, y2) in zip(got, want):
            assert y1.shape == (2, 64, 64) and y1.dtype == torch.int32 and y2.shape == (2, 29, 64, 64)
            assert torch.equal(x1, x2)
            assert torch.equal(labels_to_float(y1), y2) and torch.equal(labels_to_float(y2), y2)
        assert any(y.sum() > 0 for _, y in want)


def test_crops_are_standardised_by_their_whole_image_as_inference_tiles_are(split, phantom_root, tmp_path):
    """A per-image standardisation is fitted to the whole augmented native image, then the crop is cut: the crop's
    pixel values are the window of the whole image's model input (what tiled inference feeds), never the crop
    standardised by its own statistics. A cascade's prior sees the image resized, by its own spec."""
    cfg = data_cfg(phantom_root, tmp_path, crop_size=48, crops_per_image=4)
    prior = InputSpec(mode="resize", image_size=32, tile_size=32, intensity=Intensity(method="equalize"))
    plain = InputSpec(mode="tile", image_size=48, tile_size=48, intensity=Intensity(method="percentile", low=2.0))
    cascade = replace(plain, prior=prior)
    for spec in (plain, cascade):
        ds = build_dataset(cfg, split.train, 2, DatasetOptions(spec=spec, augment=False, progress=False))
        assert isinstance(ds, CascadeCropDataset) == (spec.prior is not None)
        for i in (0, 5, 11):
            item = ds[i]
            y0, x0 = (int(v) for v in item["window"][:2])
            whole = np.array(ds.cache.image(ds.indices[i // 4]))
            crop = whole[y0:y0 + 48, x0:x0 + 48]
            torch.testing.assert_close(item["pixel_values"], model_input(whole, spec)[:, y0:y0 + 48, x0:x0 + 48])
            assert not torch.allclose(item["pixel_values"], model_input(crop, spec), atol=1e-3)
            if spec.prior is not None:
                small = cv2.resize(whole, (32, 32), interpolation=cv2.INTER_AREA)
                torch.testing.assert_close(item["prior_pixel_values"], model_input(small, prior))


def test_whole_images_are_standardised_by_their_augmented_selves(split, phantom_root, tmp_path):
    aug = [{"name": "RandomGamma", "gamma_limit": [60, 160], "p": 1.0}]
    cfg = data_cfg(phantom_root, tmp_path, augmentations=aug)
    spec = InputSpec(mode="resize", image_size=64, tile_size=64, intensity=Intensity(method="percentile"))
    ds = build_dataset(cfg, split.train, 1, DatasetOptions(cache_samples=split.samples, spec=spec, progress=False))
    k = ds.indices[2]
    seed = int(item_rng(ds.seed, ds.epoch, 2).integers(0, 2**31 - 1))
    augmented, _ = apply_transforms(ds.transform, ds.cache.image(k), ds.cache.mask(k), seed=seed)
    assert not np.array_equal(augmented, np.array(ds.cache.image(k)))
    assert torch.equal(ds[2]["pixel_values"], model_input(augmented, spec))
