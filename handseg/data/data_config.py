"""The ``data:`` section of a training YAML: where the data is, which fold validates, and how training reads it.

It is typed here, in the shared package, because a checkpoint records it (``handseg.json``'s ``config.data``)
and the evaluator parses it back with the same schema to rebuild the very validation fold training used
(:func:`handseg.data.dataset_index.load_split`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from handseg.runtime.config_schema import FieldError

LabelFormat = Literal["packed", "float32", "uint8"]
LABEL_FORMATS: tuple[str, ...] = get_args(LabelFormat)


@dataclass
class DataConfig:
    """The ``data:`` section of a training YAML.

    ``image_size``: stage 1 whole-image side; ``crop_size``: stage 2 native crop side; ``crops_per_image``:
    stage 2 crops per image per epoch; ``bone_fraction``: share of stage 2 crops centred on a bone pixel (the
    rest are placed uniformly at random); ``seed``: fold assignment and augmentation; ``stratify``: a
    meta-data column (e.g. ``sex``) to balance folds on; ``augmentations``: albumentations list (see
    :mod:`trainer.transforms`); ``label_dtype``: ``packed`` (default) keeps the masks bit-packed, (h, w)
    int32, unpacked on the training device (a (29, 1024, 1024) crop is 121 MB in float32, 4 MB packed);
    ``float32`` / ``uint8`` unpack in the loader (see :mod:`trainer.labels`).
    """

    data_root: Path
    fold: int = 0
    n_folds: int = 5
    seed: int = 0
    stratify: str | None = None
    image_size: int = 512
    crop_size: int = 1024
    crops_per_image: int = 4
    bone_fraction: float = 0.9
    batch_size: int = 8
    num_workers: int = 2
    label_dtype: LabelFormat = "packed"
    cache_dir: Path = Path(".cache/handseg")
    augmentations: list[dict[str, Any]] = field(default_factory=list)

    def check(self) -> None:
        if self.n_folds < 2:
            raise FieldError("n_folds", f"must be >= 2, got {self.n_folds}")
        if not 0 <= self.fold < self.n_folds:
            raise FieldError("fold", f"must be in [0, {self.n_folds - 1}], got {self.fold}")
        for key in ("image_size", "crop_size", "crops_per_image", "batch_size"):
            if getattr(self, key) < 1:
                raise FieldError(key, f"must be >= 1, got {getattr(self, key)}")
        if self.num_workers < 0:
            raise FieldError("num_workers", f"must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.bone_fraction <= 1.0:
            raise FieldError("bone_fraction", f"must be in [0, 1], got {self.bone_fraction}")
