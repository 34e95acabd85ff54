"""The image cache: what it stores equals direct decoding and rasterisation; it is built once per data version."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image, write_png
from handseg.format.annotations import ImageAnnotation, polygons_in_order, read_annotation, write_annotation
from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.format.rasterize import rasterize, unpack_bits
from trainer.cache import ImageCache
from trainer.decoding import data_fingerprint


def write_synthetic(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """A minimal data set in the competition layout: one image per person, 29 random ellipse polygons each."""
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, (h, w), dtype=np.uint8)
        polygons = {}
        for c in CLASSES:
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
            rx, ry = rng.uniform(0.03, 0.15) * w, rng.uniform(0.03, 0.15) * h
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            polygons[c] = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1).round().astype(np.int32)
        pid = f"ID{i + 1:03d}"
        write_png(root / "train" / "DCM" / pid / f"image{i:013d}_R.png", image)
        ann = ImageAnnotation(f"image{i:013d}_R.png", w, h, polygons)
        write_annotation(root / "train" / "outputs_json" / pid / f"image{i:013d}_R.json", ann)
    return root


@pytest.fixture()
def synthetic(tmp_path) -> list:
    return index_split(write_synthetic(tmp_path / "data", [(96, 80)] * 3), "train")


def test_cache_matches_direct_decoding_and_rasterisation(phantom_root, tmp_path):
    samples = index_split(phantom_root, "train")[:3]
    for resolution in (None, 96):
        cache = ImageCache(samples, tmp_path / "cache", resolution, progress=False)
        assert cache.built_now and len(cache) == 3 and cache.has_masks
        for i, s in enumerate(samples):
            native = read_image(s.image_path)
            ann = read_annotation(s.label_path)
            out_hw = native.shape if resolution is None else (resolution, resolution)
            image = native if resolution is None else cv2.resize(native, out_hw[::-1], interpolation=cv2.INTER_AREA)
            masks = rasterize(polygons_in_order(ann), native.shape, out_hw)
            np.testing.assert_array_equal(cache.image(i), image)
            assert cache.mask(i).dtype == np.uint32
            np.testing.assert_array_equal(unpack_bits(np.asarray(cache.mask(i)), NUM_CLASSES), masks)
            np.testing.assert_array_equal(cache.areas[i], masks.sum(axis=(1, 2)))
            c = CLASSES.index("Pisiform")
            y0, x0, y1, x1 = cache.boxes[i, c]
            ys, xs = np.nonzero(masks[c])
            assert (y0, x0, y1, x1) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def test_cache_is_built_once_and_rebuilt_when_a_file_changes(synthetic, tmp_path):
    first = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    assert first.built_now
    stamp = (first.path / "images.npy").stat().st_mtime_ns
    second = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    assert not second.built_now and second.path == first.path
    assert (second.path / "images.npy").stat().st_mtime_ns == stamp
    # Another resolution is another cache beside it, under the same fingerprint.
    native = ImageCache(synthetic, tmp_path / "cache", None, progress=False)
    assert native.built_now and native.path.parent == first.path.parent and native.image(0).shape == (96, 80)

    fingerprint = data_fingerprint(synthetic)
    label = synthetic[1].label_path
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert data_fingerprint(synthetic) != fingerprint
    assert data_fingerprint(synthetic[:2]) != data_fingerprint(synthetic)
    third = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    assert third.built_now and third.path != first.path


def test_native_cache_keeps_differing_sizes(tmp_path):
    samples = index_split(write_synthetic(tmp_path / "data", [(64, 48), (40, 72)]), "train")
    cache = ImageCache(samples, tmp_path / "cache", None, progress=False)
    assert cache.shape == (2, 64, 72)  # padded to the largest height and width
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(cache.image(i), read_image(s.image_path))
        assert cache.mask(i).shape == cache.image(i).shape


def test_cache_pickles_without_its_arrays(synthetic, tmp_path):
    cache = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    expected = np.array(cache.image(2))
    blob = pickle.dumps(cache)
    assert len(blob) < 10_000  # paths and metadata only, not the memory maps
    np.testing.assert_array_equal(pickle.loads(blob).image(2), expected)


def test_no_leftovers_after_a_failed_build(synthetic, tmp_path):
    synthetic[2].image_path.write_bytes(b"not a png")
    with pytest.raises(Exception, match="image0000000000002_R.png"):
        ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    leftovers = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_dir()]
    assert leftovers == [data_fingerprint(synthetic)]  # the fingerprint folder, nothing built inside it


def _open_cache(args) -> bool:
    samples, cache_dir = args
    return ImageCache(samples, cache_dir, 48, progress=False).built_now


def test_concurrent_processes_build_once(synthetic, tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        built = pool.map(_open_cache, [(synthetic, tmp_path / "cache")] * 3)
    assert sorted(built) == [False, False, True]
    cache = ImageCache(synthetic, tmp_path / "cache", 48, progress=False)
    assert not cache.built_now and cache.image(0).shape == (48, 48)


@pytest.mark.parametrize(
    "damage, notice",
    [
        ("truncate images.npy", "images.npy is truncated"),
        ("delete masks.npy", "masks.npy is missing"),
        ("empty masks.npy", "masks.npy is truncated (0 of"),
        ("flip a byte of areas.npy", "areas.npy is damaged (sha256"),
    ],
)
def test_damaged_entry_is_rebuilt_with_a_one_line_notice(damage, notice, synthetic, tmp_path, capsys):
    first = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    expected = [(np.array(first.image(i)), np.array(first.mask(i)), np.array(first.areas[i])) for i in range(3)]
    verb, name = damage.split(" ")[0], damage.split(" ")[-1]
    path = first.path / name
    if verb == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif verb == "delete":
        path.unlink()
    elif verb == "empty":
        path.write_bytes(b"")
    else:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    capsys.readouterr()

    again = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cache {first.path}: ") and err[0].endswith("; rebuilding")
    assert notice in err[0]
    assert again.built_now and again.path == first.path
    for i, (image, mask, areas) in enumerate(expected):
        np.testing.assert_array_equal(again.image(i), image)
        np.testing.assert_array_equal(again.mask(i), mask)
        np.testing.assert_array_equal(again.areas[i], areas)
    # Rebuilt once: the next run opens it silently.
    assert not ImageCache(synthetic, tmp_path / "cache", 32, progress=False).built_now
    assert capsys.readouterr().err == ""


def test_a_file_damaged_after_the_check_is_a_one_line_error(synthetic, tmp_path):
    from handseg.runtime.errors import DataFormatError

    cache = ImageCache(synthetic, tmp_path / "cache", 32, progress=False)
    path = cache.path / "images.npy"
    path.write_bytes(path.read_bytes()[:200])  # after the check at start-up, before the first read
    with pytest.raises(DataFormatError, match="images.npy: damaged cache file"):
        cache.image(0)
