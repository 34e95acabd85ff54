"""Shared fixtures: one tiny phantom data set per test session and tiny model configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two cores are the norm on CI; keep every test process to one intra-op thread.
torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A tiny phantom data set in the competition layout: 4 train IDs (8 images), 2 test IDs, 256 px, seed 0."""
    from handseg.phantom import generate_dataset

    root = tmp_path_factory.mktemp("phantom") / "data"
    generate_dataset(root, train_ids=4, test_ids=2, size=256, seed=0, preview=False, progress=False)
    return root


@pytest.fixture()
def tiny_segformer_cfg():
    from handseg.model.presets import ModelConfig

    return ModelConfig(arch="segformer", preset="test")


@pytest.fixture()
def tiny_upernet_cfg():
    from handseg.model.presets import ModelConfig

    return ModelConfig(arch="upernet", preset="test")
