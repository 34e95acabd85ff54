"""The model card of a checkpoint folder: ``README.md`` in the Hugging Face model-card format.

A YAML header (``library_name``, ``pipeline_tag``, ``tags``, ``metrics``, a ``model-index`` with the
validation mean Dice) followed by: the model, the training data, the recipe, the per-class validation Dice,
robustness and efficiency where known, how to use it, intended use and limitations, provenance.

Everything comes from the folder's ``handseg.json`` (:func:`handseg.model.checkpoint.read_info`; fields as written
by ``trainer.checkpointing.RunRecord.info``: ``model``, ``input``, ``stage``, ``epoch``, ``step``, ``dice``,
``mean_dice``, ``config``, ``data_fingerprint``, ``validation``, ``versions``), plus optional robustness and
efficiency results in the shapes of :mod:`handseg.format.result_files`. Missing fields are written as "not recorded".
Each section is rendered by :mod:`handseg.model.card_sections`.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import yaml

from handseg.data.phantom_record import is_phantom_data
from handseg.model.card_sections import (
    NOT_RECORDED,
    data_section,
    dice_section,
    efficiency_section,
    fmt,
    limitations_section,
    model_name,
    model_section,
    recipe_section,
    record_get,
    robustness_section,
    usage_section,
)
from handseg.model.checkpoint import README_FILE, WEIGHTS_FILE, read_info
from handseg.runtime.atomic import atomic_write_text

BASE_TAGS = ("handseg", "medical-imaging", "x-ray", "hand", "bone-segmentation", "multi-label-segmentation")


def parameters_in_weights(weights: str | os.PathLike) -> int | None:
    """Number of trainable-shaped parameters in a ``model.safetensors`` (from its header, without loading the
    tensors; BatchNorm running statistics and counters are not counted); None if the file is unreadable."""
    try:
        with open(weights, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
    except (OSError, ValueError, struct.error):
        return None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__" or "running_" in name or name.endswith("num_batches_tracked"):
            continue
        n = 1
        for dim in entry.get("shape", []):
            n *= int(dim)
        total += n
    return total


def card_metadata(info: dict, phantom: bool | None = None, license: str | None = None) -> dict:
    """The YAML header of the card as a dict (what ``huggingface_hub.ModelCardData`` parses)."""
    arch = record_get(info, "model", "arch")
    tags = list(BASE_TAGS) + ([arch] if arch else []) + (["synthetic-data"] if phantom else [])
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "image-segmentation", "tags": tags,
                            "metrics": ["dice"]}
    if license:
        meta["license"] = license
    mean = info.get("mean_dice")
    if isinstance(mean, (int, float)):
        fold, n_folds = record_get(info, "config", "data", "fold"), record_get(info, "config", "data", "n_folds")
        dataset = ("handseg phantom hand X-rays" if phantom else "hand X-rays (competition layout)")
        meta["model-index"] = [{
            "name": model_name(info),
            "results": [{
                "task": {"type": "image-segmentation", "name": "Multi-label bone segmentation"},
                "dataset": {"name": dataset, "type": "handseg-phantom" if phantom else "hand-xray",
                            "split": f"validation fold {fold} of {n_folds}"},
                "metrics": [{"type": "dice", "value": round(float(mean), 4),
                             "name": "mean Dice over 29 classes"}],
            }],
        }]
    return meta


def render_model_card(
    info: dict, robustness: dict | None = None, efficiency: dict | None = None, phantom: bool | None = None,
    n_parameters: int | None = None, license: str | None = None,
) -> str:
    """The model card (markdown with a YAML header) of a checkpoint record.

    Args:
        info: the folder's ``handseg.json`` record.
        robustness, efficiency: optional results in the shapes of :mod:`handseg.format.result_files`.
        phantom: whether the training data was the phantom set (None: unknown).
        n_parameters: parameter count (see :func:`parameters_in_weights`).
        license: an optional license id for the header.
    """
    header = yaml.safe_dump(card_metadata(info, phantom, license), sort_keys=False, allow_unicode=True)
    model = info.get("model") or {}
    mean = info.get("mean_dice")
    summary = (f"mean validation Dice **{mean:.4f}**" if isinstance(mean, (int, float))
               else "not validated at this save")
    intro = (
        f"# {model_name(info)}: hand-bone X-ray segmentation\n\n"
        f"A {model.get('arch')} `{model.get('preset')}` model (stage {fmt(info.get('stage'))}) that segments the "
        f"29 bones of a hand X-ray as 29 independent binary masks, trained with handseg; {summary}."
        + (" Trained on synthetic phantom data: **not for clinical use**." if phantom else "") + "\n"
    )
    versions = info.get("versions") or {}
    provenance = (
        "## Provenance\n\n"
        f"Written from this folder's `handseg.json` (model, input, classes, run config, data fingerprint). "
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items()) or NOT_RECORDED}.\n"
    )
    sections = [intro, model_section(info, n_parameters), data_section(info, phantom), recipe_section(info),
                dice_section(info), robustness_section(robustness), efficiency_section(efficiency),
                usage_section(info), limitations_section(phantom), provenance]
    return f"---\n{header}---\n\n" + "\n".join(sections)


def card_for_folder(folder: str | os.PathLike, info: dict, robustness: dict | None = None,
                    efficiency: dict | None = None) -> str:
    """The card of a checkpoint folder being written: the record ``info``, the parameters counted from the
    folder's ``model.safetensors`` and the phantom check on the recorded data root."""
    data_root = record_get(info, "config", "data", "data_root")
    return render_model_card(info, robustness, efficiency, phantom=is_phantom_data(data_root),
                             n_parameters=parameters_in_weights(Path(folder) / WEIGHTS_FILE))


def write_model_card(folder: str | os.PathLike, robustness: dict | None = None,
                     efficiency: dict | None = None) -> Path:
    """Write ``README.md`` into an existing checkpoint folder atomically (the record read and checked with
    :func:`handseg.model.checkpoint.read_info`); returns its path."""
    folder = Path(folder)
    info = read_info(folder)
    return atomic_write_text(folder / README_FILE, card_for_folder(folder, info, robustness, efficiency))
