"""The competition's annotation JSON: read with validation, write atomically.

One JSON per image::

    {"annotations": [{"id": "...", "type": "poly_seg", "attributes": {}, "points": [[x, y], ...],
                      "label": "finger-1"}, ...],
     "attributes": {}, "file_id": "...", "filename": "image1661130828152_R.png",
     "parent_path": "...", "last_modifier_id": "...", "last_workers": {},
     "metadata": {"width": 2048, "height": 2048, ...}}

Points are integer pixel coordinates (x = column, y = row). Every problem is reported as a
:class:`~handseg.runtime.errors.DataFormatError` naming the file and, where it applies, the annotation and label.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handseg.format.classes import CLASS_TO_INDEX, CLASSES
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import DataFormatError


@dataclass
class ImageAnnotation:
    """Polygons of one image: ``polygons[label]`` is an (N, 2) int32 array of (x, y), keys in CLASSES order."""

    filename: str
    width: int
    height: int
    polygons: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) of the annotated image."""
        return self.height, self.width


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _parse_points(path: Path, where: str, points: Any) -> np.ndarray:
    """JSON points -> (N, 2) int32; floats are rounded to the nearest pixel."""
    if not isinstance(points, list):
        raise DataFormatError(path, f"{where}: 'points' must be a list of [x, y], got {type(points).__name__}")
    for j, p in enumerate(points):
        if not (isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)):
            raise DataFormatError(path, f"{where}: point {j} must be [x, y] with two numbers, got {p!r:.60}")
    if len(points) < 3:
        raise DataFormatError(path, f"{where}: polygon has {len(points)} point(s), at least 3 are needed")
    arr = np.asarray(points, dtype=np.float64)
    return np.rint(arr).astype(np.int32)


def _parse_size(path: Path, data: dict) -> tuple[int, int]:
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        raise DataFormatError(path, "missing or invalid 'metadata' object (needs width and height)")
    size = []
    for key in ("height", "width"):
        v = meta.get(key)
        if not _is_int(v) or v <= 0:
            raise DataFormatError(path, f"metadata.{key} must be a positive integer, got {v!r}")
        size.append(v)
    return size[0], size[1]


def parse_annotation(
    data: Any,
    path: str | os.PathLike,
    image_hw: tuple[int, int] | None = None,
    require_all: bool = True,
) -> ImageAnnotation:
    """Validate an already-decoded annotation JSON object; ``path`` is used in error messages."""
    path = Path(path)
    if not isinstance(data, dict):
        raise DataFormatError(path, f"top level must be a JSON object, got {type(data).__name__}")
    height, width = _parse_size(path, data)
    if image_hw is not None and (int(image_hw[0]), int(image_hw[1])) != (height, width):
        raise DataFormatError(
            path, f"metadata says {width}x{height} (WxH) but the image is {image_hw[1]}x{image_hw[0]}"
        )
    filename = data.get("filename", path.with_suffix(".png").name)
    if not isinstance(filename, str):
        raise DataFormatError(path, f"'filename' must be a string, got {type(filename).__name__}")
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise DataFormatError(path, "missing or invalid 'annotations' list")

    found: dict[str, np.ndarray] = {}
    for i, ann in enumerate(anns):
        if not isinstance(ann, dict):
            raise DataFormatError(path, f"annotation {i}: must be an object, got {type(ann).__name__}")
        label = ann.get("label")
        if not isinstance(label, str):
            raise DataFormatError(path, f"annotation {i}: 'label' must be a string, got {label!r:.40}")
        if label not in CLASS_TO_INDEX:
            raise DataFormatError(path, f"annotation {i}: unknown label {label!r}")
        if label in found:
            raise DataFormatError(path, f"annotation {i}: class {label!r} appears twice")
        where = f"annotation {i} ({label})"
        pts = _parse_points(path, where, ann.get("points"))
        # Vertices may lie on the far border (x == width) when outlines are clipped in continuous coordinates.
        bad = (pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                path,
                f"{where}: {int(bad.sum())} point(s) outside the {width}x{height} image, "
                f"first is point {j} {pts[j].tolist()}",
            )
        found[label] = pts

    if require_all:
        missing = [c for c in CLASSES if c not in found]
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataFormatError(path, f"{len(missing)} class(es) missing: {shown}")
    polygons = {c: found[c] for c in CLASSES if c in found}
    return ImageAnnotation(filename=filename, width=width, height=height, polygons=polygons)


def read_annotation(
    path: str | os.PathLike,
    image_hw: tuple[int, int] | None = None,
    require_all: bool = True,
) -> ImageAnnotation:
    """Read and validate one annotation JSON.

    Args:
        path: the JSON file.
        image_hw: (height, width) of the PNG it belongs to; a different metadata size is an error.
        require_all: all 29 classes must be present.
    Returns:
        ImageAnnotation with (N, 2) int32 (x, y) polygons in CLASSES order.
    Raises:
        DataFormatError naming the file: missing, malformed or truncated JSON, wrong types, unknown label,
        a class twice, fewer than 3 points, points outside the image, size mismatch, missing classes.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "annotation file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataFormatError(path, "not UTF-8 text (malformed JSON)") from None
    except OSError as exc:
        raise DataFormatError(path, f"cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        raise DataFormatError(path, "empty file (malformed JSON)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse_annotation(data, path, image_hw=image_hw, require_all=require_all)


def _annotation_id(filename: str, label: str) -> str:
    """A stable UUID-shaped id, so the same annotation always serialises to the same bytes."""
    h = hashlib.sha1(f"{filename}/{label}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def annotation_to_json(ann: ImageAnnotation, extra: dict | None = None) -> dict:
    """The competition JSON object of an annotation; ``extra`` adds or overrides top-level keys."""
    annotations = []
    for label, pts in ann.polygons.items():
        if label not in CLASS_TO_INDEX:
            raise ValueError(f"unknown label {label!r}")
        pts = np.asarray(pts)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise ValueError(f"{label}: points must have shape (N >= 3, 2), got {pts.shape}")
        annotations.append(
            {
                "id": _annotation_id(ann.filename, label),
                "type": "poly_seg",
                "attributes": {},
                "points": np.rint(pts).astype(np.int64).tolist(),
                "label": label,
            }
        )
    data: dict[str, Any] = {
        "annotations": annotations,
        "attributes": {},
        "file_id": Path(ann.filename).stem,
        "filename": ann.filename,
        "parent_path": "",
        "last_modifier_id": "",
        "last_workers": {},
        "metadata": {"height": int(ann.height), "width": int(ann.width)},
    }
    if extra:
        data.update(extra)
    return data


def write_annotation(path: str | os.PathLike, ann: ImageAnnotation, extra: dict | None = None) -> Path:
    """Write ``ann`` as competition JSON, atomically (parent folders created); returns the path.

    Annotations are written in ``ann.polygons`` order with deterministic ids, so equal inputs give
    byte-identical files. ``extra`` adds or overrides top-level keys (e.g. ``parent_path``).
    """
    data = annotation_to_json(ann, extra)
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False) + "\n")


def polygons_in_order(ann: ImageAnnotation) -> list[np.ndarray]:
    """The 29 polygons as a list in CLASSES order; a class without a polygon gives an empty (0, 2) array."""
    empty = np.zeros((0, 2), dtype=np.int32)
    return [ann.polygons.get(c, empty) for c in CLASSES]
