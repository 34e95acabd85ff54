"""The one engine type: static-batch padding, splitting and the tail engine, output unwrapping, layout and precision."""

from __future__ import annotations

import pytest
import torch

from handseg.format.classes import NUM_CLASSES
from handseg.inference.engine import Engine, as_logits, eager_engine
from handseg.model.factory import build_model
from handseg.model.presets import ModelConfig
from handseg.runtime.errors import HandSegError


def _doubling(calls: list):
    def fn(x):
        calls.append(x.shape[0])
        return x[:, :1].repeat(1, NUM_CLASSES, 1, 1) * 2

    return fn


def test_static_batch_is_padded_and_split():
    calls = []
    engine = Engine(fn=_doubling(calls), batch_size=4)
    x = torch.arange(5 * 3 * 4 * 4, dtype=torch.float32).view(5, 3, 4, 4)
    out = engine(x)
    assert calls == [4, 4] and out.shape == (5, NUM_CLASSES, 4, 4)
    torch.testing.assert_close(out[:, 0], x[:, 0] * 2)
    calls.clear()
    assert Engine(fn=_doubling(calls))(x).shape[0] == 5 and calls == [5]  # no static batch: one call


def test_a_tail_engine_runs_the_remainder_of_a_batch_without_padding():
    """Seven tiles on a batch-4 engine with a batch-1 tail: one full batch, then three calls of one, no zeros."""
    calls, tail_calls = [], []
    engine = Engine(fn=_doubling(calls), batch_size=4, tail=Engine(fn=_doubling(tail_calls), batch_size=1))
    x = torch.arange(7 * 3 * 4 * 4, dtype=torch.float32).view(7, 3, 4, 4) + 1
    out = engine(x)
    assert calls == [4] and tail_calls == [1, 1, 1] and out.shape == (7, NUM_CLASSES, 4, 4)
    torch.testing.assert_close(out[:, 0], x[:, 0] * 2)
    calls.clear()
    tail_calls.clear()
    engine(x[:2])  # a batch shorter than the static one goes to the tail whole
    assert calls == [] and tail_calls == [1, 1]


def test_outputs_are_unwrapped_and_made_contiguous_float32():
    logits = torch.randn(2, NUM_CLASSES, 4, 4)
    assert as_logits(logits) is logits and as_logits((logits,)) is logits
    assert as_logits(type("Out", (), {"logits": logits})()) is logits
    with pytest.raises(TypeError):
        as_logits("no tensor")
    channels_last = Engine(fn=lambda x: [logits.half().contiguous(memory_format=torch.channels_last)])
    out = channels_last(torch.zeros(2, 3, 16, 16))
    assert out.is_contiguous() and out.dtype == torch.float32


def test_static_side_is_enforced():
    engine = Engine(fn=lambda x: x, side=64, backend="aot_inductor")
    with pytest.raises(HandSegError, match="64x64"):
        engine(torch.zeros(1, 3, 32, 32))


def test_eager_engine_runs_the_model_in_eval_mode(tiny_segformer_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_segformer_cfg).train()
    engine = eager_engine(model)
    x = torch.randn(2, 3, 64, 64)
    out = engine(x)
    assert not model.training and out.shape == (2, NUM_CLASSES, 16, 16)
    assert engine.name == "eager_fp32" and eager_engine(build_model(ModelConfig(preset="test")), "bf16").autocast
    with torch.no_grad():
        torch.testing.assert_close(out, model(pixel_values=x).logits)
