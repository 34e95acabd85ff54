"""Augmentations: an albumentations pipeline declared in YAML, applied to an image and its bit-packed masks.

The YAML is a list of transforms, each a mapping with ``name`` (an albumentations class) and its arguments::

    augmentations:
      - {name: HorizontalFlip, p: 0.5}
      - {name: Affine, rotate: [-15, 15], p: 0.5}
      - {name: RandomBrightnessContrast, p: 0.3}
      - {name: OneOf, p: 0.2, transforms: [{name: CLAHE}, {name: Equalize}]}

``OneOf``, ``SomeOf`` and ``Sequential`` take a nested ``transforms`` list. An unknown name, an unknown or
invalid argument, or a transform that cannot run on a grayscale uint8 image raises
:class:`~handseg.runtime.errors.ConfigError` naming the file and the key (``augmentations[2].name``).

Masks: the 29 masks travel as the cache stores them, one (H, W) uint32 with bit c = class c. OpenCV cannot
warp uint32, so the packed array is viewed as (H, W, 4) uint8 — its four bytes as channels — and given to
albumentations as the ``mask``. Geometric transforms move a mask with nearest-neighbour interpolation, which
takes every channel of an output pixel from the same input pixel, so the four bytes move together and every
bit survives exactly; pixel-level transforms (brightness, CLAHE, compression) leave masks alone. The view costs
nothing, unlike unpacking to 29 channels. Any interpolation other than nearest would mix bits, so a
``mask_interpolation`` other than 0 is rejected. A horizontal flip turns a right hand into a left one; both
occur in the data and labels are per bone, so no label is swapped.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

import albumentations as A
import numpy as np

from handseg.runtime.config_schema import load_yaml
from handseg.runtime.errors import ConfigError

COMPOSITIONS = ("OneOf", "SomeOf", "Sequential")
# Done by the data loader itself (normalisation, tensor conversion) or changing the image's type/channels.
FORBIDDEN = ("Normalize", "ToTensorV2", "ToFloat", "FromFloat", "ToRGB", "ToSepia", "ToGray")


def packed_to_bytes(packed: np.ndarray) -> np.ndarray:
    """(H, W) uint32 -> (H, W, 4) uint8 view of the same memory (made contiguous first)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint32)
    return packed.view(np.uint8).reshape(*packed.shape, 4)


def bytes_to_packed(data: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W) uint32; the inverse of :func:`packed_to_bytes`."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    return data.view(np.uint32).reshape(data.shape[:2])


def _build_one(item: Any, file: str | os.PathLike, key: str) -> A.BasicTransform | A.BaseCompose:
    if not isinstance(item, dict):
        raise ConfigError(file, key, f"expected a mapping with 'name' and arguments, got {item!r:.60}")
    name = item.get("name")
    if not isinstance(name, str):
        raise ConfigError(file, f"{key}.name", "missing or not a string (an albumentations transform name)")
    cls = getattr(A, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        raise ConfigError(file, f"{key}.name", f"unknown albumentations transform {name!r}")
    if name in FORBIDDEN:
        raise ConfigError(file, f"{key}.name", f"{name} is not allowed: the data loader normalises images itself")
    kwargs = {k: v for k, v in item.items() if k != "name"}
    if issubclass(cls, A.BaseCompose):
        if name not in COMPOSITIONS:
            raise ConfigError(file, f"{key}.name", f"use one of {list(COMPOSITIONS)} to compose transforms")
        children = kwargs.pop("transforms", None)
        if not isinstance(children, list) or not children:
            raise ConfigError(file, f"{key}.transforms", "expected a non-empty list of transforms")
        kwargs["transforms"] = [_build_one(c, file, f"{key}.transforms[{i}]") for i, c in enumerate(children)]
    if kwargs.get("mask_interpolation", 0) != 0:
        raise ConfigError(file, f"{key}.mask_interpolation", "masks are bit-packed: only nearest (0) keeps them exact")
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        for arg in kwargs:
            if arg not in params or arg == "self":
                allowed = ", ".join(p for p in params if p not in ("self", "strict"))
                raise ConfigError(file, f"{key}.{arg}", f"unknown argument of {name} (allowed: {allowed})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # albumentations warns about invalid arguments
            return cls(**kwargs)
    except (ValueError, TypeError, UserWarning) as exc:
        cause = exc.__cause__
        errors = cause.errors() if hasattr(cause, "errors") else []  # pydantic's, when albumentations validated
        loc = errors[0].get("loc", ()) if errors else ()
        arg = str(loc[0]) if loc and str(loc[0]) in kwargs else None
        if errors:
            problem = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in errors[:3])
        else:
            problem = " ".join(str(exc).split())[:300]
        raise ConfigError(file, f"{key}.{arg}" if arg else key, f"invalid arguments for {name}: {problem}") from None


def _smoke_test(transform: A.BasicTransform | A.BaseCompose, file: str | os.PathLike, key: str) -> None:
    """Run one transform (forced on) on a small gray image with a packed mask; it must keep types and sizes."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    mask = packed_to_bytes(rng.integers(0, 2**29, (64, 64), dtype=np.uint32))
    pipe = A.Compose([transform], p=1.0, seed=0)
    saved = transform.p
    try:
        transform.p = 1.0
        out = pipe(image=image, mask=mask)
    except Exception as exc:  # noqa: BLE001 - any failure here is a configuration problem
        raise ConfigError(file, key, f"cannot run on a grayscale uint8 image: {' '.join(str(exc).split())[:200]}")
    finally:
        transform.p = saved
    img, msk = out["image"], out["mask"]
    if img.dtype != np.uint8 or img.ndim != 2 or msk.dtype != np.uint8 or msk.shape != img.shape + (4,):
        raise ConfigError(
            file, key, f"must keep a (H, W) uint8 image and its mask; got image {img.shape} {img.dtype}"
        )


def build_transforms(
    spec: list | None, file: str | os.PathLike = "<config>", key: str = "augmentations"
) -> A.Compose | None:
    """Build and check the albumentations pipeline of a YAML list (None or [] -> None, no augmentation).

    Each item is checked by building it and running it once on a small image, so a bad entry fails at config
    time, not in a loader worker. Raises ConfigError(file, "augmentations[i].<arg>", problem).
    """
    if spec is None:
        return None
    if not isinstance(spec, list):
        raise ConfigError(file, key, f"expected a list of transforms, got {type(spec).__name__}")
    transforms = []
    for i, item in enumerate(spec):
        t = _build_one(item, file, f"{key}[{i}]")
        _smoke_test(t, file, f"{key}[{i}]")
        transforms.append(t)
    if not transforms:
        return None
    return A.Compose(transforms, p=1.0, seed=0)


def load_transforms(path: str | os.PathLike, key: str = "augmentations") -> A.Compose | None:
    """Read the pipeline from a YAML file: the list under ``key`` (dotted for nesting, e.g. ``data.augmentations``)."""
    data: Any = load_yaml(path)
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            raise ConfigError(path, key, "required key is missing")
        data = data[part]
    return build_transforms(data, path, key)


def apply_transforms(
    pipeline: A.Compose | None, image: np.ndarray, packed: np.ndarray, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Augment an image and its packed masks together.

    Args:
        pipeline: from :func:`build_transforms`; None returns the inputs (as contiguous copies).
        image: (H, W) uint8.
        packed: (H, W) uint32 bit-packed masks.
        seed: reseeds the pipeline first, so a given seed always gives the same augmentation.
    Returns:
        (image (H', W') uint8, packed (H', W') uint32).
    """
    if pipeline is None:
        return np.array(image, dtype=np.uint8), np.array(packed, dtype=np.uint32)
    if seed is not None:
        pipeline.set_random_seed(int(seed))
    out = pipeline(image=np.ascontiguousarray(image), mask=packed_to_bytes(packed))
    return np.ascontiguousarray(out["image"]), bytes_to_packed(out["mask"])
