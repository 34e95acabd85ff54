"""The manifest written beside every compiled engine, and the check that refuses a stale one.

A manifest records what the engine is (backend, precision, static batch and tile shape, normalisation, classes,
versions), where it came from (the source checkpoint's sha256) and how well it agrees with eager fp32.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from handseg.format.classes import CLASSES
from handseg.model.checkpoint import checkpoint_sha256, versions
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import HandSegError

MANIFEST_VERSION = 1


class StaleEngineError(HandSegError):
    """An engine's manifest does not match the checkpoint (or settings) it is about to be used with."""


def manifest_path(engine_path: str | Path) -> Path:
    """``trt_models/x.pt2`` -> ``trt_models/x.json``."""
    return Path(engine_path).with_suffix(".json")


def _scale(spec: dict) -> str:
    """How grey levels reach the unit scale, in words: ``/ 255``, or the per-image intensity map of the spec."""
    method = (spec.get("intensity") or {}).get("method", "none")
    if method == "none":
        return "uint8 / 255, gray -> 3 channels"
    return f"per-image intensity map ({method}, fitted to the whole image; input.intensity), gray -> 3 channels"


PRIOR_CHANNELS = "sigmoid of the stage-1 logits over the tile"  # what a cascade's 29 extra input channels hold


@dataclass(frozen=True)
class EngineRecord:
    """What the manifest of one compiled engine records: its file, backend, precision, static batch and side, output
    shape, the input spec and model config of its checkpoint, that checkpoint and its weights' sha256, the device,
    TensorRT's optimisation level, the agreement measured against eager fp32, and ``prior``: for a cascade's stage
    2, its stage-1 engine (``engine`` file name, ``source_sha256`` of its weights), which this engine is only valid
    with."""

    engine_path: str | Path
    backend: str
    precision: str
    batch_size: int
    side: int
    output_shape: list[int]
    input_spec: Any
    model_cfg: Any
    checkpoint: str | Path
    checkpoint_sha256: str
    device: str
    optimization_level: int | None
    agreement: dict | None
    prior: dict | None = None

    def manifest(self) -> dict:
        """The manifest dict (JSON-serialisable), with the library versions and the time it was made."""
        spec = self.input_spec.to_dict() if hasattr(self.input_spec, "to_dict") else dict(self.input_spec)
        channels = 3 if spec.get("prior") is None else 3 + len(CLASSES)
        batch, side = int(self.batch_size), int(self.side)
        return {
            "manifest_version": MANIFEST_VERSION,
            "engine": Path(self.engine_path).name,
            "backend": self.backend,
            "precision": self.precision,
            "batch_size": batch,
            "input_shape": [batch, channels, side, side],
            "prior": self.prior,
            "output_shape": [int(s) for s in self.output_shape],
            "input": spec,
            "normalisation": {"mean": spec.get("mean"), "std": spec.get("std"), "scale": _scale(spec),
                              "prior_channels": PRIOR_CHANNELS if channels > 3 else None},
            "classes": list(CLASSES),
            "model": asdict(self.model_cfg) if is_dataclass(self.model_cfg) else self.model_cfg,
            "source_checkpoint": str(self.checkpoint),
            "source_sha256": self.checkpoint_sha256,
            "device": self.device,
            "optimization_level": self.optimization_level,
            "versions": versions(),
            "agreement_vs_eager_fp32": self.agreement,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }


def write_manifest(engine_path: str | Path, manifest: dict) -> Path:
    """Write the manifest beside the engine (atomic)."""
    return atomic_write_text(manifest_path(engine_path), json.dumps(manifest, indent=2) + "\n")


def read_manifest(engine_path: str | Path) -> dict:
    """Read the manifest beside ``engine_path``; a missing or malformed one is a StaleEngineError."""
    path = manifest_path(engine_path)
    if not path.is_file():
        raise StaleEngineError(f"{engine_path}: no manifest ({path.name}) beside the engine; "
                               "recompile with tensorrt_aot.py")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise StaleEngineError(f"{path}: unreadable manifest; recompile with tensorrt_aot.py") from None
    if not isinstance(data, dict):
        raise StaleEngineError(f"{path}: manifest is not a JSON object; recompile with tensorrt_aot.py")
    return data


def check_manifest(manifest: dict, checkpoint_folder: str | Path, expect: dict | None = None,
                   sha256: str | None = None) -> None:
    """Refuse an engine built from another checkpoint, for other classes, or with other settings.

    ``expect`` maps manifest keys (backend, precision, batch_size, input_shape, ...) to required values;
    ``sha256``: the checkpoint's weights hash where the caller has it (a loaded checkpoint's), else the folder's
    weights are hashed. Raises StaleEngineError with a one-line message naming the mismatch.
    """
    name = manifest.get("engine", "engine")
    fix = "recompile it with `python tensorrt_aot.py --cfg-path <eval.yaml>`"
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise StaleEngineError(f"{name}: manifest version {manifest.get('manifest_version')!r} is not supported; {fix}")
    sha = sha256 if sha256 is not None else checkpoint_sha256(checkpoint_folder)
    if manifest.get("source_sha256") != sha:
        raise StaleEngineError(
            f"{name}: stale engine, built from checkpoint sha256 {str(manifest.get('source_sha256'))[:12]}... "
            f"but {checkpoint_folder} has {sha[:12]}...; {fix}"
        )
    if manifest.get("classes") != list(CLASSES):
        raise StaleEngineError(f"{name}: engine classes differ from the project's {len(CLASSES)} classes; {fix}")
    for key, value in (expect or {}).items():
        if manifest.get(key) != value:
            raise StaleEngineError(f"{name}: manifest {key} is {manifest.get(key)!r}, the config needs {value!r}; "
                                   f"{fix}")
