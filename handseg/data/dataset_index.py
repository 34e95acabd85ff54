"""Find the images and annotations of a data root, group them by person, and split them into folds.

Layout (see the README): ``<root>/train/DCM/IDxxx/*.png`` paired with ``<root>/train/outputs_json/IDxxx/*.json``
by relative path, ``<root>/test/DCM/IDxxx/*.png``, and an optional ``meta_data.csv`` / ``meta_data.xlsx``
(read by :mod:`handseg.data.meta_data`).
One ``IDxxx`` folder is one person; folds are group K-fold on it, so a person's two hands never end up on
both sides of a split.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from handseg.data.meta_data import meta_column, read_meta
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import ConfigError, DataFormatError

if TYPE_CHECKING:
    from handseg.data.data_config import DataConfig

PHANTOM_HINT = (
    "create phantom data with `python scripts/make_phantom.py --out data/phantom --train-ids 40 --test-ids 10` "
    "(or `make demo`), or set data.data_root to your copy of the data"
)
MAX_CATEGORIES = 5  # a numeric meta column with more distinct values is binned into quantiles to stratify
STRATIFY_BINS = 4


@dataclass(frozen=True)
class Sample:
    """One image: its PNG, its JSON (None for test), person folder, bare file name, path under ``<split>/DCM``."""

    image_path: Path
    label_path: Path | None
    patient_id: str
    name: str
    rel: str


def _files(folder: Path, suffix: str) -> dict[str, Path]:
    """posix path relative to ``folder`` without suffix -> file, for every ``*suffix`` (any case), skipping hidden."""
    found = {}
    for path in folder.rglob("*"):
        if path.suffix.lower() != suffix or not path.is_file():
            continue
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        found[rel.with_suffix("").as_posix()] = path
    return found


def _listing(items: list[str], total: int, what: str, k: int = 3) -> str:
    shown = ", ".join(items[:k]) + (", ..." if total > k else "")
    return f"{total} {what}: {shown}"


def index_split(root: str | os.PathLike, split: str = "train") -> list[Sample]:
    """Index ``<root>/<split>/DCM`` (and, for train, ``outputs_json``); samples sorted by ``rel``.

    Raises DataFormatError for a missing root or folder, a folder with no PNG, an image outside an ``IDxxx``
    folder, and (train) PNGs without a JSON or JSONs without a PNG (count and the first few).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "data root not found")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    dcm = root / split / "DCM"
    if not dcm.is_dir():
        raise DataFormatError(dcm, f"folder not found (expected {split}/DCM/IDxxx/*.png under the data root)")
    images = _files(dcm, ".png")
    if not images:
        raise DataFormatError(dcm, "no PNG images found")
    labels: dict[str, Path] = {}
    if split == "train":
        out_json = root / split / "outputs_json"
        if not out_json.is_dir():
            raise DataFormatError(out_json, "folder not found (expected train/outputs_json/IDxxx/*.json)")
        labels = _files(out_json, ".json")
        no_json = sorted(set(images) - set(labels))
        no_png = sorted(set(labels) - set(images))
        if no_json or no_png:
            parts = []
            if no_json:
                parts.append(_listing([f"DCM/{k}.png" for k in no_json], len(no_json),
                                      "PNG(s) without annotation JSON"))
            if no_png:
                parts.append(_listing([f"outputs_json/{k}.json" for k in no_png], len(no_png), "JSON(s) without PNG"))
            raise DataFormatError(root / split, "; ".join(parts))
    samples = []
    for key in sorted(images):
        path = images[key]
        rel = path.relative_to(dcm).as_posix()
        parts = rel.split("/")
        if len(parts) < 2:
            raise DataFormatError(path, f"image is directly in {split}/DCM; expected it inside a person's IDxxx folder")
        samples.append(Sample(path, labels.get(key), parts[0], path.name, rel))
    samples.sort(key=lambda s: s.rel)
    return samples


def validate_samples(samples: list[Sample], decode: bool = False) -> list[DataFormatError]:
    """Check every image (PNG header, or full decode) and annotation (validator, size against the PNG).

    Returns the problems found, one DataFormatError per bad file, instead of stopping at the first.
    """
    from handseg.format.annotations import read_annotation
    from handseg.data.image_io import read_image, read_image_size

    problems: list[DataFormatError] = []
    for s in samples:
        try:
            hw = read_image(s.image_path).shape if decode else read_image_size(s.image_path)
        except DataFormatError as exc:
            problems.append(exc)
            hw = None
        if s.label_path is not None:
            try:
                read_annotation(s.label_path, image_hw=hw)
            except DataFormatError as exc:
                problems.append(exc)
    return problems


def _strata(patients: list[str], meta, column: str) -> list[str]:
    """Stratum label per patient: category, or quantile bin for a numeric column with many values."""
    import pandas as pd

    if meta is None:
        raise ValueError(f"stratify={column!r} needs meta_data.csv or meta_data.xlsx in the data root")
    values = meta[meta_column(meta, column)].reindex(patients)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum() and values.nunique() > MAX_CATEGORIES:
        values = pd.qcut(numeric, STRATIFY_BINS, duplicates="drop").astype(str)
    return ["<missing>" if pd.isna(v) or v == "nan" else str(v) for v in values]


def assign_folds(
    samples: list[Sample],
    n_folds: int = 5,
    seed: int = 0,
    stratify: str | None = None,
    meta=None,
) -> dict[str, int]:
    """Group K-fold: patient ID -> fold in ``[0, n_folds)``; deterministic for a seed.

    Patients are shuffled with ``seed`` and dealt round-robin; with ``stratify`` (a meta column such as
    ``sex`` or ``age``, numeric columns binned into quartiles) they are dealt stratum by stratum, so each
    fold gets a share of every stratum. Fold sizes differ by at most one patient.
    """
    patients = sorted({s.patient_id for s in samples})
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if len(patients) < n_folds:
        raise ValueError(f"{len(patients)} person folder(s) cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    order = [patients[i] for i in rng.permutation(len(patients))]
    if stratify:
        strata = dict(zip(patients, _strata(patients, meta, stratify)))
        # Stable sort by stratum keeps the shuffled order inside each stratum.
        order.sort(key=lambda p: strata[p])
    return {p: i % n_folds for i, p in enumerate(order)}


def split_fold(samples: list[Sample], folds: dict[str, int], fold: int) -> tuple[list[Sample], list[Sample]]:
    """(train, val): samples of patients in ``fold`` are validation, all others training."""
    if fold not in set(folds.values()):
        raise ValueError(f"fold {fold} does not exist (folds: {sorted(set(folds.values()))})")
    missing = sorted({s.patient_id for s in samples} - set(folds))
    if missing:
        raise ValueError(f"{len(missing)} patient(s) have no fold, e.g. {missing[:3]}")
    val = [s for s in samples if folds[s.patient_id] == fold]
    train = [s for s in samples if folds[s.patient_id] != fold]
    return train, val


def save_folds(path: str | os.PathLike, folds: dict[str, int]) -> Path:
    """Write patient -> fold as JSON (``{"n_folds": k, "folds": {...}}``) or CSV (``patient_id,fold``), atomically."""
    path = Path(path)
    ordered = dict(sorted(folds.items()))
    if path.suffix.lower() == ".csv":
        text = "patient_id,fold\n" + "".join(f"{p},{f}\n" for p, f in ordered.items())
    else:
        text = json.dumps({"n_folds": len(set(folds.values())), "folds": ordered}, indent=1) + "\n"
    return atomic_write_text(path, text)


def load_folds(path: str | os.PathLike) -> dict[str, int]:
    """Read a file written by :func:`save_folds`; DataFormatError naming the file when malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "folds file not found")
    try:
        if path.suffix.lower() == ".csv":
            lines = path.read_text().splitlines()
            if not lines or lines[0].strip() != "patient_id,fold":
                raise ValueError("header must be patient_id,fold")
            folds = {}
            for line in lines[1:]:
                if line.strip():
                    p, f = line.split(",")
                    folds[p.strip()] = int(f)
            return folds
        data = json.loads(path.read_text())
        return {str(p): int(f) for p, f in data["folds"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataFormatError(path, f"malformed folds file ({exc})") from None


def fold_summary(samples: list[Sample], folds: dict[str, int], meta=None, stratify: str | None = None) -> str:
    """Printable table: per fold its number of persons and images, its IDs, and strata counts when stratified."""
    images: dict[str, int] = {}
    for s in samples:
        images[s.patient_id] = images.get(s.patient_id, 0) + 1
    strata = dict(zip(sorted(folds), _strata(sorted(folds), meta, stratify))) if stratify else {}
    lines = []
    for fold in sorted(set(folds.values())):
        members = sorted(p for p, f in folds.items() if f == fold)
        n_img = sum(images.get(p, 0) for p in members)
        line = f"fold {fold}: {len(members)} person(s), {n_img} image(s): {' '.join(members)}"
        if strata:
            counts: dict[str, int] = {}
            for p in members:
                counts[strata[p]] = counts.get(strata[p], 0) + 1
            line += "  [" + ", ".join(f"{stratify}={k}: {v}" for k, v in sorted(counts.items())) + "]"
        lines.append(line)
    return "\n".join(lines)


@dataclass
class DataSplit:
    """The train split of a data root and one fold of it (patients never straddle train and val)."""

    samples: list[Sample]  # every annotated image, sorted by relative path
    train: list[Sample]
    val: list[Sample]
    folds: dict[str, int]  # patient id -> fold


def load_split(cfg: "DataConfig", file: str | os.PathLike = "<config>", key: str = "data") -> DataSplit:
    """Index ``cfg.data_root``, assign patients to folds (``n_folds``, ``seed``, ``stratify``) and split off
    ``cfg.fold``: the one definition of the validation fold, used by training, the evaluator and the
    comparison of candidate checkpoints.

    Raises ConfigError(file, "<key>.data_root") when the folder is missing (with how to make phantom data) and
    ConfigError(file, "<key>.fold") when the fold leaves no training or no validation image.
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
    for name, part in (("training", train), ("validation", val)):
        if not part:
            raise ConfigError(
                file,
                f"{key}.fold",
                f"fold {cfg.fold} of {cfg.n_folds} leaves no {name} images ({len(samples)} images of "
                f"{len(set(folds))} patients in {root}); use fewer folds or more data",
            )
    return DataSplit(samples=samples, train=train, val=val, folds=folds)
