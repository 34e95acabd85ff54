"""Model factory: presets, shapes, auxiliary logits, overrides, pretrained loading, torch.export."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from handseg.format.classes import CLASSES, NUM_CLASSES
from handseg.model.factory import LogitsModule, build_model, forward_logits, forward_train
from handseg.model.io import InputSpec, upsample_logits
from handseg.model.presets import SEGFORMER_PRESETS, ModelConfig, hf_config, size_divisor
from handseg.runtime.config_schema import from_dict
from handseg.runtime.errors import ConfigError, DataFormatError


def _batch(h=128, w=128, b=2):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0))


def test_official_segformer_sizes():
    b0 = hf_config(ModelConfig(arch="segformer", preset="mit-b0"))
    assert list(b0.hidden_sizes) == [32, 64, 160, 256] and b0.decoder_hidden_size == 256
    b2 = hf_config(ModelConfig(arch="segformer", preset="mit-b2"))
    assert list(b2.hidden_sizes) == [64, 128, 320, 512] and list(b2.depths) == [3, 4, 6, 3]
    assert b2.decoder_hidden_size == 768 and list(b2.num_attention_heads) == [1, 2, 5, 8]
    b5 = hf_config(ModelConfig(arch="segformer", preset="mit-b5"))
    assert list(b5.depths) == [3, 6, 40, 3]


def test_official_upernet_sizes():
    tiny = hf_config(ModelConfig(arch="upernet", preset="convnext-tiny"))
    assert tiny.backbone_config.model_type == "convnext"
    assert list(tiny.backbone_config.depths) == [3, 3, 9, 3] and tiny.hidden_size == 512
    base = hf_config(ModelConfig(arch="upernet", preset="convnext-base"))
    assert list(base.backbone_config.hidden_sizes) == [128, 256, 512, 1024]
    v2 = hf_config(ModelConfig(arch="upernet", preset="convnextv2-tiny"))
    assert v2.backbone_config.model_type == "convnextv2"


@pytest.mark.parametrize("cfg_name", ["tiny_segformer_cfg", "tiny_upernet_cfg"])
def test_build_has_29_labels(cfg_name, request):
    model = build_model(request.getfixturevalue(cfg_name))
    assert model.config.num_labels == NUM_CLASSES
    assert [model.config.id2label[i] for i in range(NUM_CLASSES)] == list(CLASSES)
    assert model.config.label2id["Pisiform"] == CLASSES.index("Pisiform")


def test_segformer_shapes_and_no_aux(tiny_segformer_cfg):
    model = build_model(tiny_segformer_cfg).eval()
    x = _batch()
    with torch.no_grad():
        logits = forward_logits(model, x)
        train_logits, aux = forward_train(model, x)
        hf = model(pixel_values=x).logits
    assert logits.shape == (2, NUM_CLASSES, 32, 32)  # 1/4 resolution
    assert aux is None
    torch.testing.assert_close(logits, hf)
    torch.testing.assert_close(train_logits, hf)
    assert upsample_logits(logits, (128, 128)).shape == (2, NUM_CLASSES, 128, 128)


def test_upernet_shapes_and_aux(tiny_upernet_cfg):
    model = build_model(tiny_upernet_cfg).eval()
    x = _batch(96, 160)
    with torch.no_grad():
        logits = forward_logits(model, x)
        train_logits, aux = forward_train(model, x)
        hf = model(pixel_values=x).logits
    assert logits.shape == (2, NUM_CLASSES, 96, 160)
    assert aux is not None and aux.shape == (2, NUM_CLASSES, 96, 160)
    torch.testing.assert_close(logits, hf)
    torch.testing.assert_close(train_logits, hf)
    assert not torch.allclose(aux, logits)


def test_upernet_aux_loss_reaches_aux_head(tiny_upernet_cfg):
    model = build_model(tiny_upernet_cfg).train()
    x = _batch()
    _, aux = forward_train(model, x)
    F.binary_cross_entropy_with_logits(aux, torch.zeros_like(aux)).backward()
    grad = model.auxiliary_head.classifier.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.decode_head.classifier.weight.grad is None  # only the aux path was in this loss


def test_upernet_without_aux_head():
    model = build_model(ModelConfig(arch="upernet", preset="test", overrides={"use_auxiliary_head": False}))
    _, aux = forward_train(model, _batch())
    assert aux is None and model.auxiliary_head is None


def test_overrides_reach_hf_configs():
    seg = build_model(ModelConfig(arch="segformer", preset="test", overrides={"drop_path_rate": 0.0}))
    assert seg.config.drop_path_rate == 0.0
    up = build_model(ModelConfig(arch="upernet", preset="test",
                                 overrides={"pool_scales": [1, 2], "backbone_config": {"drop_path_rate": 0.2}}))
    assert list(up.config.pool_scales) == [1, 2]
    assert up.config.backbone_config.drop_path_rate == 0.2


@pytest.mark.parametrize(
    "data, key",
    [
        ({"arch": "segformer", "preset": "mit-b9"}, "model.preset"),
        ({"arch": "upernet", "preset": "mit-b0"}, "model.preset"),
        ({"arch": "vit"}, "model.arch"),
        ({"preset": "test", "overrides": {"depthz": [1, 1, 1, 1]}}, "model.overrides"),
        ({"preset": "test", "overrides": {"depths": "deep"}}, "model.overrides"),
        ({"preset": "test", "overrides": {"num_labels": 3}}, "model.overrides"),
        ({"arch": "upernet", "preset": "test", "overrides": {"backbone_config": {"widths": 3}}}, "model.overrides"),
        ({"preset": "test", "aux_loss_weight": -1}, "model.aux_loss_weight"),
    ],
)
def test_bad_model_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        from_dict(ModelConfig, data, file="train.yaml", prefix="model")
    assert err.value.key == key
    assert "train.yaml" in str(err.value)


def test_size_divisor(tiny_segformer_cfg, tiny_upernet_cfg):
    assert size_divisor(tiny_segformer_cfg) == 32
    assert size_divisor(tiny_upernet_cfg) == 32
    assert size_divisor(ModelConfig(arch="upernet", preset="convnext-tiny")) == 32


def test_pretrained_local_folder_gets_a_29_class_head(tmp_path):
    source = SegformerForSemanticSegmentation(SegformerConfig(**SEGFORMER_PRESETS["test"], num_labels=5))
    source.save_pretrained(tmp_path / "src")
    model = build_model(ModelConfig(arch="segformer", preset="test", pretrained=str(tmp_path / "src")))
    assert model.config.num_labels == NUM_CLASSES and model.config.id2label[28] == "Ulna"
    assert model.decode_head.classifier.weight.shape[0] == NUM_CLASSES
    src_state, state = source.state_dict(), model.state_dict()
    name = "segformer.stages.0.patch_embeddings.proj.weight"
    assert name in state
    torch.testing.assert_close(state[name], src_state[name])


def test_pretrained_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        build_model(ModelConfig(preset="test", pretrained=str(tmp_path / "nowhere")))


@pytest.mark.parametrize("cfg_name", ["tiny_segformer_cfg", "tiny_upernet_cfg"])
def test_logits_module_exports_with_static_shape(cfg_name, request):
    model = build_model(request.getfixturevalue(cfg_name)).eval()
    module = LogitsModule(model).eval()
    x = _batch(128, 128, b=2)
    exported = torch.export.export(module, (x,))
    with torch.no_grad():
        expected = module(x)
        got = exported.module()(x)
    assert isinstance(got, torch.Tensor)
    torch.testing.assert_close(got, expected)


def test_input_spec_errors_in_a_config_name_the_key():
    spec = InputSpec.from_dict({"mode": "tile", "image_size": 512, "tile_size": 256, "overlap": 0.5,
                                "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]})
    assert spec.mean == (0.5, 0.5, 0.5) and spec.model_size == 256
    with pytest.raises(ConfigError) as err:
        from_dict(InputSpec, {"mode": "tiles", "image_size": 512, "tile_size": 256}, file="e.yaml", prefix="input")
    assert err.value.key == "input.mode"


def test_classifier_bias_starts_at_the_prior(tiny_segformer_cfg, tiny_upernet_cfg):
    """Random init sets every 29-class classifier bias to log(p / (1 - p)); prior_prob null leaves the default."""
    import dataclasses
    import math

    for cfg in (tiny_segformer_cfg, tiny_upernet_cfg):
        model = build_model(cfg).eval()
        heads = [m for n, m in model.named_modules() if n.endswith("classifier")]
        assert heads and all(torch.allclose(h.bias, torch.full_like(h.bias, math.log(0.01 / 0.99))) for h in heads)
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            assert torch.sigmoid(forward_logits(model, x)).mean() < 0.05
    plain = build_model(dataclasses.replace(tiny_segformer_cfg, prior_prob=None))
    assert plain.decode_head.classifier.bias.abs().max() < 1.0


def test_segformer_forward_does_not_import_upernet_code():
    """Which head runs is decided from the model's config: a SegFormer never imports UperNet's modelling code."""
    code = ("import sys, torch\n"
            "from handseg.model.factory import build_model, forward_logits, forward_train\n"
            "from handseg.model.presets import ModelConfig\n"
            "model = build_model(ModelConfig(arch='segformer', preset='test')).eval()\n"
            "x = torch.zeros(1, 3, 64, 64)\n"
            "assert forward_logits(model, x).shape == (1, 29, 16, 16)\n"
            "assert forward_train(model, x)[1] is None\n"
            "print(sorted(m for m in sys.modules if 'modeling_upernet' in m))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
