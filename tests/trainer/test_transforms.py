"""Augmentation pipelines from YAML: built and checked, applied exactly to bit-packed masks, errors name the key."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from handseg.format.rasterize import pack_bits, unpack_bits
from handseg.runtime.errors import ConfigError
from trainer.transforms import apply_transforms, build_transforms, bytes_to_packed, load_transforms, packed_to_bytes

YAML = """\
data:
  augmentations:
    - {name: HorizontalFlip, p: 0.5}
    - {name: Affine, rotate: [-15, 15], p: 0.5}
    - {name: RandomBrightnessContrast, p: 0.3}
    - {name: CLAHE, p: 0.2}
    - {name: ElasticTransform, p: 0.1}
    - {name: ImageCompression, p: 0.1}
    - name: OneOf
      p: 0.2
      transforms: [{name: GaussNoise}, {name: Blur}]
"""


def blobs(h: int = 64, w: int = 64, c: int = 29, seed: int = 0) -> np.ndarray:
    """(c, h, w) uint8 {0,1} overlapping discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((c, h, w), np.uint8)
    for k in range(c):
        cy, cx, r = rng.uniform(10, h - 10), rng.uniform(10, w - 10), rng.uniform(3, 12)
        masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return masks


def test_packed_bytes_view_round_trips():
    packed = np.random.default_rng(0).integers(0, 2**32, (7, 5), dtype=np.uint32)
    assert packed_to_bytes(packed).shape == (7, 5, 4)
    np.testing.assert_array_equal(bytes_to_packed(packed_to_bytes(packed)), packed)


def test_pipeline_from_yaml_is_deterministic_and_moves_masks_with_the_image(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(YAML)
    pipe = load_transforms(path, key="data.augmentations")
    assert len(pipe.transforms) == 7
    image = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    masks = blobs()
    packed = pack_bits(masks)
    a = apply_transforms(pipe, image, packed, seed=5)
    b = apply_transforms(pipe, image, packed, seed=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    outputs = {apply_transforms(pipe, image, packed, seed=s)[1].tobytes() for s in range(8)}
    assert len(outputs) > 1  # different seeds, different augmentations
    # The image-intensity transforms never touch the masks, and the result stays uint32 at the input size.
    assert a[0].dtype == np.uint8 and a[0].shape == (64, 64) and a[1].dtype == np.uint32 and a[1].shape == (64, 64)


@pytest.mark.parametrize("spec", [
    [{"name": "Affine", "rotate": [-30, 30], "scale": [0.8, 1.2], "p": 1.0}],
    [{"name": "ElasticTransform", "alpha": 30, "sigma": 4, "p": 1.0}],
    [{"name": "HorizontalFlip", "p": 1.0}, {"name": "GridDistortion", "p": 1.0}],
])
def test_geometric_transforms_keep_every_bit_exact(spec):
    """Warping the packed mask equals warping each of the 29 unpacked masks with the same parameters."""
    pipe = build_transforms(spec)
    image = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    masks = blobs(seed=3)
    _, packed_out = apply_transforms(pipe, image, pack_bits(masks), seed=11)
    pipe.set_random_seed(11)
    channels = pipe(image=image, mask=np.ascontiguousarray(masks.transpose(1, 2, 0)))["mask"]
    np.testing.assert_array_equal(unpack_bits(packed_out, 29), channels.transpose(2, 0, 1))
    assert unpack_bits(packed_out, 29).sum() > 0.5 * masks.sum()


def test_empty_pipeline_is_none_and_returns_copies():
    assert build_transforms(None) is None and build_transforms([]) is None
    image, packed = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint32)
    out_image, out_packed = apply_transforms(None, image, packed)
    out_image[0, 0] = 9
    assert image[0, 0] == 0 and out_packed.dtype == np.uint32


@pytest.mark.parametrize("bad, key, words", [
    ([{"name": "Foo"}], "augmentations[2].name", "unknown albumentations transform"),
    ([{"name": "Affine", "rotat": [1, 2]}], "augmentations[2].rotat", "unknown argument"),
    ([{"name": "Affine", "rotate": "x"}], "augmentations[2].rotate", "invalid arguments"),
    ([{"name": "CLAHE", "clip_limit": -3}], "augmentations[2].clip_limit", "invalid arguments"),
    ([{"name": "HorizontalFlip", "p": 2}], "augmentations[2].p", "invalid arguments"),
    ([{"name": "Affine", "mask_interpolation": 1}], "augmentations[2].mask_interpolation", "nearest"),
    ([{"name": "Normalize"}], "augmentations[2].name", "not allowed"),
    ([{"p": 0.5}], "augmentations[2].name", "missing"),
    (["Blur"], "augmentations[2]", "expected a mapping"),
    ([{"name": "OneOf", "transforms": [{"name": "Blurr"}]}], "augmentations[2].transforms[0].name", "unknown"),
    ([{"name": "OneOf"}], "augmentations[2].transforms", "non-empty list"),
])
def test_bad_entries_name_file_and_key(tmp_path, bad, key, words):
    path = tmp_path / "aug.yaml"
    path.write_text(yaml.safe_dump({"augmentations": [{"name": "HorizontalFlip"}, {"name": "Blur"}] + bad}))
    with pytest.raises(ConfigError) as info:
        load_transforms(path)
    assert info.value.key == key and info.value.file == path
    assert words in info.value.problem and str(path) in str(info.value)


def test_not_a_list_is_an_error():
    with pytest.raises(ConfigError, match="augmentations: expected a list"):
        build_transforms({"name": "Blur"}, "cfg.yaml")
