"""Stage 1 of the GPU recipe starts from ImageNet weights: the stored sizes must be the preset's, a fresh head gets
the preset's width and the class-prior bias, and a machine without the hub gets one line saying what to do."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import SegformerConfig, SegformerForImageClassification

from handseg.model.factory import build_model
from handseg.model.presets import SEGFORMER_PRESETS, ModelConfig
from handseg.runtime.errors import DataFormatError
from trainer.config import load_train_config


def test_the_gpu_recipe_starts_from_mit_b3_with_the_matching_preset(repo_root):
    """nvidia/mit-b3 (SegFormer paper, Table 1 / the hub's config): 4 stages of widths 64-128-320-512, depths
    3-4-18-3, heads 1-2-5-8; the preset the checkpoint records must build the same network."""
    model = load_train_config(repo_root / "config/train_stage1.yaml").model
    assert (model.arch, model.preset, model.pretrained) == ("segformer", "mit-b3", "nvidia/mit-b3")
    preset = SEGFORMER_PRESETS["mit-b3"]
    assert preset["hidden_sizes"] == [64, 128, 320, 512] and preset["depths"] == [3, 4, 18, 3]
    assert preset["num_attention_heads"] == [1, 2, 5, 8] and preset["decoder_hidden_size"] == 768


def test_without_the_hub_the_error_says_how_to_go_on():
    with pytest.raises(DataFormatError) as err:  # the tests run with HF_HUB_OFFLINE=1
        build_model(ModelConfig(preset="mit-b3", pretrained="nvidia/mit-b3"))
    line = str(err.value)
    assert line.startswith("nvidia/mit-b3: cannot load pretrained weights (") and "\n" not in line
    assert "huggingface-cli download nvidia/mit-b3 --local-dir DIR" in line and "model.pretrained: DIR" in line
    assert line.endswith("or start from random weights with --set model.pretrained=null")


def test_an_imagenet_encoder_gets_a_fresh_head_at_the_preset_width_and_prior(tmp_path):
    """The hub's mit-b* models are image classifiers: their encoder is kept, the decode head is new."""
    encoder = SegformerForImageClassification(SegformerConfig(**{**SEGFORMER_PRESETS["test"],
                                                                "decoder_hidden_size": 256}, num_labels=10))
    encoder.save_pretrained(tmp_path / "mit")
    model = build_model(ModelConfig(preset="test", pretrained=str(tmp_path / "mit")))
    assert model.decode_head.classifier.in_channels == SEGFORMER_PRESETS["test"]["decoder_hidden_size"]
    bias = math.log(0.01 / 0.99)
    assert torch.allclose(model.decode_head.classifier.bias, torch.full((29,), bias))
    name = "segformer.stages.0.blocks.0.attention.q_proj.weight"
    assert torch.equal(model.state_dict()[name], encoder.state_dict()[name])


def test_weights_of_another_size_are_refused_naming_both(tmp_path):
    SegformerForImageClassification(SegformerConfig(**SEGFORMER_PRESETS["demo"])).save_pretrained(tmp_path / "b")
    with pytest.raises(DataFormatError) as err:
        build_model(ModelConfig(preset="test", pretrained=str(tmp_path / "b")))
    assert "its hidden_sizes is [16, 32, 80, 128], preset segformer/test has [8, 16, 24, 32]" in str(err.value)
