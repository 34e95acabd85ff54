"""Evaluator fixtures: a tiny checkpoint (SegFormer `test` preset, stage-2 tiles), its eval config, and one
AOTInductor engine compiled once per session (compiles are the slow part on small CPUs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

TILE = 64
IMAGE = 128


def synthetic_xray(size: int = IMAGE, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 image with bright blobs on a gradient: stands in for an X-ray where the phantom
    data set is not needed."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.tile(np.linspace(30, 90, size, dtype=np.float32), (size, 1))
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        axes = tuple(int(v) for v in rng.integers(4, size // 5, 2))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(120, 230)), -1)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8)


def make_checkpoint(folder: Path, seed: int = 0, mode: str = "tile") -> Path:
    """A `test`-preset SegFormer checkpoint saved like training does (stage-2 input spec: 64 px tiles)."""
    import torch

    from handseg.model.checkpoint import save_checkpoint
    from handseg.model.factory import build_model
    from handseg.model.io import InputSpec
    from handseg.model.presets import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig(arch="segformer", preset="test")
    model = build_model(cfg)
    with torch.no_grad():  # push the decoder's bias so a fraction of pixels is on and masks are not trivial
        model.decode_head.classifier.bias.copy_(torch.linspace(-1.0, 1.0, 29))
    spec = InputSpec(mode=mode, image_size=IMAGE, tile_size=TILE, overlap=0.25)
    info = {
        "model": cfg,
        "input": spec,
        "stage": 2 if mode == "tile" else 1,
        "epoch": 1,
        "step": 1,
        "dice": None,
        "config": {"seed": 0, "data": {"data_root": "data", "fold": 0, "n_folds": 2, "seed": 0}},
        "data_fingerprint": "test",
    }
    return save_checkpoint(model, folder, info)


def write_eval_yaml(path: Path, checkpoint: Path, engine_dir: Path, out_dir: Path, data_root: Path | None = None,
                    **extra) -> Path:
    data = {
        "checkpoint": str(checkpoint),
        "data_root": str(data_root or path.parent / "no-data"),
        "backend": "aot_inductor",
        "device": "cpu",
        "precision": "fp32",
        "batch_size_eval": 2,
        "engine_dir": str(engine_dir),
        "output_dir": str(out_dir),
        "n_worst_overlays": 1,
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("runs") / "tiny" / "best")


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trt_models")


@pytest.fixture(scope="session")
def eval_yaml(tmp_path_factory, tiny_ckpt, engine_dir) -> Path:
    root = tmp_path_factory.mktemp("evalcfg")
    return write_eval_yaml(root / "eval.yaml", tiny_ckpt, engine_dir, root / "out")


@pytest.fixture(scope="session")
def aoti_engine(eval_yaml):
    """(path, manifest) of the AOTInductor engine of the tiny checkpoint at (2, 3, 64, 64), built once."""
    from evaluator.build_engine import EngineRequest, build_engine
    from evaluator.config import load_eval_config
    from evaluator.engines import load_eval_checkpoint

    cfg = load_eval_config(eval_yaml)
    return build_engine(cfg, load_eval_checkpoint(cfg), synthetic_xray(), EngineRequest(backend="aot_inductor"))


def make_cascade(folder: Path, seed: int = 0) -> Path:
    """A cascade checkpoint as training writes it: a stage-2 refiner on 64 px tiles with its stage 1 (128 px whole
    images) in ``prior/``; the refiner's output nudged off zero so that both parts matter."""
    import torch

    from handseg.model.checkpoint import load_checkpoint, save_checkpoint
    from handseg.model.factory import cascade_refiner
    from handseg.model.io import InputSpec

    stage1 = load_checkpoint(make_checkpoint(folder.parent / f"{folder.name}_stage1", seed=seed, mode="resize"))
    refiner, cfg = cascade_refiner(stage1.model, stage1.model_cfg)
    with torch.no_grad():
        refiner.decode_head.classifier.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
    spec = InputSpec(mode="tile", image_size=TILE, tile_size=TILE, overlap=0.25, prior=stage1.spec)
    info = {**stage1.info, "model": cfg, "input": spec, "stage": 2}
    return save_checkpoint(refiner, folder, info, prior=stage1.folder)
