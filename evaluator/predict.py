"""Predictions for new X-rays: one image or a folder, with the evaluator's engine, thresholds and post-processing.

For every PNG (8- or 16-bit, grayscale or RGB, any size) :func:`predict_image` writes, under the output folder
(sub-folders of an input folder are kept):

- ``<stem>.overlay.png``: the X-ray with each predicted bone tinted, outlined and keyed, and a legend of the 29
  classes;
- ``<stem>.json``: the prediction as an annotation in the training format (one ``poly_seg`` polygon per found
  class that rasterises back to the class mask with Dice >= 0.995, islands and holes joined in by zero-width
  bridges where needed; see :mod:`handseg.format.polygons`), so it opens in the labelling tools and reads back
  through :func:`handseg.format.annotations.read_annotation`;
- ``<stem>.masks.npz`` with ``--masks npz``: ``masks`` (29, H, W) bool and ``classes`` (29,) names;

and :func:`predict_paths` adds ``areas_mm2.csv`` (one row per image, one column per class) when a pixel spacing
is given, and ``qc.csv`` (``image,predicted_dice,flag,reason``) with the quality control of every image
(:mod:`evaluator.qc`; its per-bone detail goes into each annotation JSON's ``attributes.qc``). An unreadable
image gets one line on stderr and the others are still predicted. Two inputs that would write the same output
files are refused before any work (:func:`output_stems`).
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from evaluator.config import EvalConfig
from evaluator.context import EvalContext, build_context
from evaluator.overlays import prediction_overlay
from evaluator.qc.assess import QCResult, QualityControl, load_quality_control, predict_with_qc
from evaluator.qc.files import QC_CSV, qc_attributes, qc_row, write_qc_csv
from handseg.data.image_io import read_image, write_png
from handseg.format.areas import class_areas_mm2, pixel_area_mm2
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.polygons import write_prediction_annotation
from handseg.inference.pipeline import predict_masks
from handseg.inference.settings import InferenceCall
from handseg.runtime.atomic import atomic_write_bytes
from handseg.runtime.errors import DataFormatError

MASK_FORMATS = ("npz",)


@dataclass(frozen=True)
class Predictor:
    """Everything one prediction needs: the inference ``call`` the evaluator would make (engine, settings, device,
    thresholds, post-processing) and the quality control (None: off)."""

    call: InferenceCall
    qc: QualityControl | None = None

    @classmethod
    def from_context(cls, ctx: EvalContext, qc: QualityControl | None = None) -> "Predictor":
        """The predictor of an evaluation context (its engine, settings, device, thresholds, post-processing)."""
        return cls(ctx.call, qc)

    def masks(self, image: np.ndarray) -> ClassMasks:
        """(H, W) uint8 X-ray -> the 29 class masks at its size (on the CPU)."""
        return predict_masks(self.call, image).to("cpu")

    def masks_and_qc(self, image: np.ndarray) -> tuple[ClassMasks, QCResult | None]:
        """The same masks and, with quality control, their :class:`~evaluator.qc.assess.QCResult` (same pass)."""
        if self.qc is None:
            return self.masks(image), None
        return predict_with_qc(self.call, image, self.qc)


def load_predictor(cfg: EvalConfig, file: str = "<config>", echo: bool = True, qc: bool = True) -> Predictor:
    """The engine, inference settings, thresholds, post-processing and quality control (``qc``) of an
    evaluation config."""
    return Predictor.from_context(build_context(cfg, file, echo=echo), load_quality_control(cfg, echo) if qc else None)


@dataclass
class PredictResult:
    """What :func:`predict_paths` did: written files per image, the images that failed, and the areas file."""

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    areas_csv: Path | None = None
    qc_csv: Path | None = None
    flagged: list[str] = field(default_factory=list)


def input_images(target: str | Path) -> tuple[Path, list[Path]]:
    """``(root, images)``: a PNG file is its own list (root: its folder); a folder gives its PNGs, recursively
    and sorted. A missing path, a non-PNG file, or a folder without PNGs is a DataFormatError."""
    path = Path(target)
    if path.is_file():
        if path.suffix.lower() != ".png":
            raise DataFormatError(path, "not a PNG file (predict.py reads PNG X-rays)")
        return path.parent, [path]
    if not path.is_dir():
        raise DataFormatError(path, "no such file or folder")
    images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".png")
    if not images:
        raise DataFormatError(path, "no PNG images in this folder")
    return path, images


OUTPUT_SUFFIXES = (".overlay.png", ".json", ".masks.npz")  # what predict_image may write next to a stem


def output_stems(root: Path, images: list[Path], out_dir: str | Path) -> list[Path]:
    """The output stem of each image: ``out_dir`` / its path under ``root`` without the suffix.

    Two inputs that would write the same files (``x.png`` and ``x.PNG``, or names that differ only in case,
    which are one file on macOS and Windows file systems), or an output that would overwrite an input (an
    ``x.overlay.png`` beside ``x.png`` when ``out_dir`` is the input folder), are one DataFormatError naming
    both paths; it is raised before anything is loaded or written.
    """
    inputs = {str(p.resolve()).casefold(): p for p in images}
    claimed: dict[str, Path] = {}
    stems = []
    for path in images:
        stem = Path(out_dir) / path.relative_to(root).with_suffix("")
        key = str(stem.resolve()).casefold()
        if key in claimed:
            raise DataFormatError(path, f"would write the same output files as {claimed[key]} ({stem}.json, ...); "
                                        "rename one or predict them into separate --out folders")
        claimed[key] = path
        for suffix in OUTPUT_SUFFIXES:
            hit = inputs.get(key + suffix)
            if hit is not None:
                raise DataFormatError(hit, f"would be overwritten by the output {stem}{suffix} of {path}; "
                                           "choose another --out folder")
        stems.append(stem)
    return stems


def save_masks_npz(path: Path, masks: ClassMasks) -> Path:
    """Write ``masks`` (29, H, W) bool and ``classes`` (29,) to a compressed ``.npz``, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, masks=masks.to_dense().numpy(), classes=np.array(CLASSES))
    atomic_write_bytes(path, buf.getvalue())
    return path


def predict_image(predictor: Predictor, image_path: Path, stem: Path, masks_format: str | None = None
                  ) -> tuple[list[Path], np.ndarray, QCResult | None]:
    """Predict one X-ray and write its overlay, annotation JSON (and masks) next to ``stem``.

    Args:
        image_path: the PNG to read.
        stem: output path without suffix, e.g. ``out/ID001/image123`` (folders are created).
        masks_format: None, or ``"npz"`` to also write the (29, H, W) masks.
    Returns:
        ``(written files, (29,) int64 pixels per class, its quality control or None)``.
    Raises:
        DataFormatError: the image cannot be read (nothing is written for it).
    """
    image = read_image(image_path)
    masks, qc = predictor.masks_and_qc(image)
    stem.parent.mkdir(parents=True, exist_ok=True)
    overlay = stem.with_name(stem.name + ".overlay.png")
    write_png(overlay, prediction_overlay(image, masks)[:, :, ::-1], compression=1)  # RGB -> BGR for OpenCV
    extra = None if qc is None else {"attributes": {"qc": qc_attributes(qc)}}
    annotation, _fits = write_prediction_annotation(stem.with_name(stem.name + ".json"), masks,
                                                    filename=image_path.name, extra=extra)
    written = [overlay, annotation]
    if masks_format == "npz":
        written.append(save_masks_npz(stem.with_name(stem.name + ".masks.npz"), masks))
    elif masks_format is not None:
        raise ValueError(f"unknown masks format {masks_format!r}; choose from {MASK_FORMATS}")
    return written, masks.areas(), qc


def write_areas_csv(path: Path, rows: list[tuple[str, np.ndarray]], spacing_mm: float | list[float]) -> Path:
    """``image, <29 class columns>`` in mm^2 (pixel count x pixel area), one row per predicted image."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", *CLASSES])
    for name, pixels in rows:
        writer.writerow([name, *(f"{area:.3f}" for area in class_areas_mm2(pixels, spacing_mm).values())])
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def predict_paths(predictor: Predictor, target: str | Path, out_dir: str | Path, masks_format: str | None = None,
                  pixel_spacing: float | list[float] | None = None, progress: bool = True) -> PredictResult:
    """Predict every PNG of ``target`` (a file or a folder) into ``out_dir``; see the module docstring."""
    if pixel_spacing is not None:
        pixel_area_mm2(pixel_spacing)  # a bad spacing fails before any work
    root, images = input_images(target)
    out_dir = Path(out_dir)
    stems = output_stems(root, images, out_dir)
    result, areas, qc_rows = PredictResult(), [], []
    bar = tqdm(list(zip(images, stems)), desc="predict", unit="image", disable=not progress or len(images) < 2)
    for path, stem in bar:
        rel = path.relative_to(root).with_suffix("")
        try:
            written, pixels, qc = predict_image(predictor, path, stem, masks_format)
        except DataFormatError as exc:
            result.failed.append((path, exc.problem))
            tqdm.write(f"error: {path}: {exc.problem}", file=sys.stderr)
            continue
        result.written[str(rel)] = written
        areas.append((str(rel), pixels))
        if qc is not None:
            qc_rows.append(qc_row(path.relative_to(root).as_posix(), qc))
            if qc.flag:
                result.flagged.append(path.relative_to(root).as_posix())
    if pixel_spacing is not None and areas:
        result.areas_csv = write_areas_csv(out_dir / "areas_mm2.csv", areas, pixel_spacing)
    if predictor.qc is not None and qc_rows:
        result.qc_csv = write_qc_csv(out_dir / QC_CSV, qc_rows)
    return result
