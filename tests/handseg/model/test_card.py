"""Model cards: written with every checkpoint save that asks for one, parsed back by huggingface_hub."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard

from handseg.data.image_io import read_image
from handseg.data.phantom_record import is_phantom_data
from handseg.format.classes import CLASSES
from handseg.inference.engine import eager_engine
from handseg.inference.pipeline import predict_probs
from handseg.inference.settings import InferenceSettings
from handseg.model.card import (
    card_for_folder,
    parameters_in_weights,
    render_model_card,
    write_model_card,
)
from handseg.model.checkpoint import README_FILE, read_info, save_checkpoint
from handseg.model.factory import build_model
from handseg.model.io import InputSpec
from handseg.runtime.config_schema import to_dict
from handseg.runtime.errors import DataFormatError
from tests.trainer.helpers import tiny_config, write_yaml
from trainer.checkpointing import RunRecord
from trainer.config import load_train_config
from trainer.state import TrainProgress

ROBUSTNESS = {"unperturbed": {"mean_dice": 0.9}, "n_images": 2, "perturbations": [  # robustness.json's shape
    {"kind": "rotation", "strength": 10, "unit": "deg", "mean_dice": 0.88, "tolerance": 0.03, "passed": True},
    {"kind": "rotation", "strength": 5, "unit": "deg", "mean_dice": 0.895, "tolerance": 0.03, "passed": True},
    {"kind": "jpeg_quality", "strength": 50, "mean_dice": 0.87, "tolerance": 0.02, "passed": False}]}
EFFICIENCY = {"device": "cpu", "device_name": "x86_64", "torch_threads": 2, "image_size": 2048,
              "memory_method": "peak RSS", "results": [
                  {"engine": "aot_inductor", "batch": 1, "tile_ms_p50": 13.4, "image_ms": 469.0,
                   "images_per_s": 2.13, "peak_mem_mib": 1724.0, "mask_dice_min": 1.0}]}


def record(phantom_root: Path, tmp_path: Path, mode: str = "resize", dice: bool = True) -> dict:
    """A ``handseg.json`` record as training writes it, for the tiny config on the phantom fixture."""
    cfg = load_train_config(write_yaml(tmp_path / "train.yaml", tiny_config(phantom_root, tmp_path / "run")))
    rng = np.random.default_rng(0)
    per_class = {c: float(rng.uniform(0.7, 0.99)) for c in CLASSES} if dice else None
    mean = float(np.mean(list(per_class.values()))) if dice else None
    spec = InputSpec(mode=mode, image_size=128, tile_size=64)
    run = RunRecord(config=to_dict(cfg), model=to_dict(cfg.model), input=to_dict(spec), stage=1,
                    data_fingerprint="f00d",
                    validation={"threshold": 0.5, "batch_size": 4, "blend": "gaussian", "n_images": 2})
    return run.info(TrainProgress(epoch=2, step=6), per_class, mean)


@pytest.fixture()
def saved(tmp_path, phantom_root, tiny_segformer_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_segformer_cfg).eval()
    folder = save_checkpoint(model, tmp_path / "run" / "best", record(phantom_root, tmp_path), readme=card_for_folder)
    return model, folder


def dice_table(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^\| \d+ \| `([^`]+)` \| [^|]+ \| ([0-9.]+) \|$",
                                                                 text, flags=re.MULTILINE)}


def test_card_written_inside_the_atomic_save_parses_as_a_hub_card(saved, tmp_path):
    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == [README_FILE, "config.json", "handseg.json",
                                                        "model.safetensors"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["best"]  # no staging folder left
    card = ModelCard.load(folder / README_FILE)
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-segmentation"
    assert {"handseg", "medical-imaging", "x-ray", "segformer", "synthetic-data"} <= set(data.tags)
    assert data.metrics == ["dice"]
    info = read_info(folder)
    result = data.eval_results[0]
    assert result.metric_type == "dice" and result.metric_value == round(info["mean_dice"], 4)
    assert result.task_type == "image-segmentation" and result.dataset_type == "handseg-phantom"
    table = dice_table(card.text)
    assert list(table) == list(CLASSES)
    for name in CLASSES:
        assert table[name] == pytest.approx(info["dice"][name], abs=5e-5)
    assert f"**{info['mean_dice']:.4f}**" in card.text
    n_params = sum(p.numel() for p in model.parameters())
    assert parameters_in_weights(folder / "model.safetensors") == n_params
    assert f"{n_params / 1e6:.2f} M" in card.text
    for section in ("## Model", "## Training data", "## Training recipe", "## Validation Dice", "## Robustness",
                    "## Efficiency", "## How to use", "## Intended use and limitations"):
        assert section in card.text
    assert "trained on synthetic phantom images only" in card.text and "not for clinical use" in card.text


def test_card_usage_snippet_runs_and_matches_the_project_inference(saved, phantom_root):
    model, folder = saved
    text = (folder / README_FILE).read_text()
    code = re.search(r"```python\n(.*?)```", text, flags=re.DOTALL).group(1)
    image_path = sorted((phantom_root / "train" / "DCM").rglob("*.png"))[0]
    code = code.replace("path/to/this/folder", folder.as_posix()).replace("hand.png", image_path.as_posix())
    scope: dict = {}
    exec(compile(code, "model-card-snippet", "exec"), scope)
    info = read_info(folder)
    image = read_image(image_path)
    settings = InferenceSettings(input=InputSpec.from_dict(info["input"]))
    expected = predict_probs(eager_engine(model), image, settings, device="cpu")
    assert scope["masks"].shape == (29, *image.shape)
    torch.testing.assert_close(scope["probs"][0], expected, atol=1e-5, rtol=0)


def test_robustness_and_efficiency_sections(saved):
    _, folder = saved
    write_model_card(folder, robustness=ROBUSTNESS, efficiency=EFFICIENCY)
    text = (folder / README_FILE).read_text()
    assert "| rotation | 5 deg | 0.8950 | -0.0050 |" in text  # sorted by strength, change vs unperturbed
    assert "| rotation | 10 deg | 0.8800 | -0.0200 |" in text
    assert "| jpeg_quality | 50 | 0.8700 | -0.0300 |" in text
    assert "| aot_inductor | 1 | 13.40 | 469.0 | 2.13 | 1724 | 1.00000 |" in text
    assert "Not measured" not in text
    ModelCard(text)  # still a valid card
    with pytest.raises(DataFormatError, match="unperturbed.mean_dice must be a number"):
        write_model_card(folder, robustness={"perturbations": []})
    with pytest.raises(DataFormatError, match=r"results\[0\] lacks image_ms"):
        write_model_card(folder, efficiency={"results": [{"engine": "x", "batch": 1, "tile_ms_p50": 1.0}]})


def test_unvalidated_save_and_unknown_data(tmp_path, phantom_root):
    info = record(phantom_root, tmp_path, mode="tile", dice=False)
    info["config"]["data"]["data_root"] = str(tmp_path / "elsewhere")
    text = render_model_card(info, phantom=is_phantom_data(info["config"]["data"]["data_root"]))
    card = ModelCard(text)
    assert card.data.eval_results is None and "synthetic-data" not in card.data.tags
    assert "Not validated at this save" in text
    assert "could not be identified" in text and "not for clinical use" in text
    assert "x = gray[:64, :64]" in text  # tile models are shown on one native tile


def test_failing_card_leaves_the_previous_checkpoint(saved):
    model, folder = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(_folder, _info):
        raise RuntimeError("card failed")

    with pytest.raises(RuntimeError, match="card failed"):
        save_checkpoint(model, folder, read_info(folder), readme=broken)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_card_says_how_grey_levels_are_standardised(tmp_path, phantom_root):
    info = record(phantom_root, tmp_path)
    assert "grayscale scaled to [0, 1]" in render_model_card(info)
    info["input"]["intensity"] = {"method": "zscore", "low": 0.0, "high": 100.0, "region": "foreground"}
    card = render_model_card(info)
    assert "standardised per image (`zscore`, low 0.0, high 100.0, region foreground" in card
    assert "handseg.model.io.model_input does both" in card
