"""Export + AOTInductor compile of the tiny model on CPU, agreement with eager, manifests and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from evaluator.config import load_eval_config
from evaluator.engines import engine_path, eval_settings, load_engine, load_eval_checkpoint
from evaluator.manifest import StaleEngineError, check_manifest, read_manifest
from handseg.inference.engine import eager_engine
from handseg.runtime.errors import ConfigError
from tests.commands import load_script, run_main

from .conftest import TILE, make_checkpoint, synthetic_xray


def test_aoti_engine_agrees_with_eager(aoti_engine, eval_yaml):
    path, manifest = aoti_engine
    assert path.suffix == ".pt2" and path.is_file() and path.with_suffix(".json").is_file()
    assert manifest["backend"] == "aot_inductor" and manifest["input_shape"] == [2, 3, TILE, TILE]
    assert manifest["output_shape"] == [2, 29, TILE // 4, TILE // 4]  # SegFormer logits at 1/4
    assert manifest["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    agree = manifest["agreement_vs_eager_fp32"]
    assert agree["mask_dice_min"] >= 0.999
    assert agree["max_abs_diff_logits"] < 1e-3

    # Load through the one interface and compare again, on another image, with a short (padded) tile batch.
    cfg = load_eval_config(eval_yaml)
    ckpt = load_eval_checkpoint(cfg)
    engine = load_engine(cfg, ckpt)
    assert engine.backend == "aot_inductor" and engine.batch_size == 2
    ref = eager_engine(ckpt.model, "fp32", "cpu")
    x = torch.randn(3, 3, TILE, TILE)  # 3 tiles: one full batch + one padded
    torch.testing.assert_close(engine(x), ref(x), atol=1e-3, rtol=1e-3)

    from evaluator.agreement import compare

    out = compare((engine, eval_settings(cfg, ckpt, engine)), (ref, eval_settings(cfg, ckpt, ref)),
                  synthetic_xray(seed=1), "cpu")
    assert out["mask_dice_min"] >= 0.999 and out["max_abs_diff_probs"] < 1e-3


def test_stale_engine_is_refused(aoti_engine, eval_yaml, tmp_path):
    path, manifest = aoti_engine
    cfg = load_eval_config(eval_yaml)
    # Same engine, checkpoint retrained (other weights): the manifest no longer matches.
    other = make_checkpoint(tmp_path / "other" / "best", seed=1)
    with pytest.raises(StaleEngineError, match="stale engine"):
        check_manifest(read_manifest(path), other)
    # Through load_engine: copy the engine where the config for the other checkpoint looks for it.
    cfg.checkpoint = other
    other_ckpt = load_eval_checkpoint(cfg)
    target = engine_path(cfg, other_ckpt, "aot_inductor", 2)
    assert target.name.endswith(f"_b2_t{TILE}.pt2")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    shutil.copy(path.with_suffix(".json"), target.with_suffix(".json"))
    with pytest.raises(StaleEngineError) as err:
        load_engine(cfg, other_ckpt)
    assert "\n" not in str(err.value) and "tensorrt_aot.py" in str(err.value)
    # A manifest for other settings (precision) is refused too.
    bad = dict(manifest, precision="bf16")
    with pytest.raises(StaleEngineError, match="precision"):
        check_manifest(bad, load_eval_config(eval_yaml).checkpoint, expect={"precision": "fp32"})


def test_missing_engine_says_how_to_build_it(eval_yaml, tmp_path):
    cfg = load_eval_config(eval_yaml)
    cfg.engine_dir = tmp_path / "empty"
    with pytest.raises(StaleEngineError, match="tensorrt_aot.py"):
        load_engine(cfg, load_eval_checkpoint(cfg))


def test_tensorrt_without_torch_tensorrt_is_one_line(eval_yaml):
    # The config's device is cpu: whether or not torch_tensorrt is installed, TensorRT cannot run here.
    proc = run_main(load_script("tensorrt_aot").main, "--cfg-path", eval_yaml, "--backend", "tensorrt")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "--backend aot_inductor" in lines[0]
    assert ("torch_tensorrt" in lines[0]) or ("CUDA" in lines[0])


def test_tile_not_divisible_is_a_config_error(eval_yaml):
    from evaluator.build_engine import EngineRequest, build_engine

    cfg = load_eval_config(eval_yaml, overrides={"tile_size": 72})
    with pytest.raises(ConfigError) as err:
        build_engine(cfg, load_eval_checkpoint(cfg), synthetic_xray(), EngineRequest(backend="aot_inductor"))
    assert err.value.key == "tile_size" and "multiple" in err.value.problem and "32" in err.value.problem


def test_manifest_records_provenance(aoti_engine, tiny_ckpt):
    from handseg.format.classes import CLASSES
    from handseg.model.checkpoint import checkpoint_sha256

    path, _ = aoti_engine
    manifest = json.loads(path.with_suffix(".json").read_text())
    assert manifest["source_sha256"] == checkpoint_sha256(tiny_ckpt)
    assert manifest["classes"] == list(CLASSES)
    assert manifest["precision"] == "fp32" and manifest["versions"]["torch"] == torch.__version__
    assert len(manifest["agreement_vs_eager_fp32"]["mask_dice_per_class"]) == 29


def test_cascade_compiles_both_parts_and_refuses_a_stale_prior(tmp_path):
    """A cascade checkpoint compiles to two AOTInductor engines (stage 2 on (2, 32, 64, 64) tiles, stage 1 on
    (1, 3, 128, 128)) that agree with eager through the whole inference path, stage 2 with its batch-1 tail; a
    retrained stage 1 inside the checkpoint makes the pair stale."""
    import shutil

    from evaluator.build_engine import EngineRequest, build_engine
    from handseg.model.checkpoint import PRIOR_DIR

    from .conftest import make_cascade, make_checkpoint, write_eval_yaml

    ckpt_dir = make_cascade(tmp_path / "run" / "best")
    cfg = load_eval_config(write_eval_yaml(tmp_path / "eval.yaml", ckpt_dir, tmp_path / "engines", tmp_path / "out"))
    ckpt = load_eval_checkpoint(cfg)
    path, manifest = build_engine(cfg, ckpt, synthetic_xray(), EngineRequest(backend="aot_inductor"))
    assert manifest["input_shape"] == [2, 32, TILE, TILE] and manifest["prior"]["engine"].endswith("_b1_t128.pt2")
    assert manifest["agreement_vs_eager_fp32"]["mask_dice_min"] >= 0.999
    engine = load_engine(cfg, ckpt)
    assert engine.prior is not None and engine.prior.side == 128 and engine.side == TILE
    # The batch-1 tail runs what is left over after full batches: three tiles are one batch of 2 and one of 1.
    assert manifest["tail"]["batch_size"] == 1 and engine.tail is not None and engine.tail.batch_size == 1
    calls = []
    for part in (engine, engine.tail):
        part.fn = (lambda fn: lambda x: calls.append(x.shape[0]) or fn(x))(part.fn)
    assert engine(torch.randn(3, 32, TILE, TILE)).shape[0] == 3 and calls == [2, 1]
    # Stage 1 retrained (other weights, with their own record) inside the checkpoint: its engine no longer matches.
    other = make_checkpoint(tmp_path / "other" / "best", seed=3, mode="resize")
    shutil.rmtree(ckpt_dir / PRIOR_DIR)
    shutil.copytree(other, ckpt_dir / PRIOR_DIR)
    with pytest.raises(StaleEngineError, match="stale engine"):
        load_engine(cfg, load_eval_checkpoint(cfg))


def test_compiled_engine_runs_without_the_model_code(aoti_engine, eval_yaml, repo_root):
    """A process that predicts with a compiled engine (as the evaluator, predict.py and the robustness report do)
    never builds the transformers model nor imports its modelling code or Inductor's Python side: what the process
    holds is torch, the engine and the image (about 440 MiB less resident memory on CPU)."""
    code = f"""
import sys
from evaluator.config import load_eval_config
from evaluator.engines import eval_settings, load_engine, load_eval_checkpoint
from handseg.inference.pipeline import predict_masks
from handseg.inference.settings import InferenceCall
from tests.evaluator.conftest import synthetic_xray

cfg = load_eval_config({str(eval_yaml)!r})
ckpt = load_eval_checkpoint(cfg, echo=False)
engine = load_engine(cfg, ckpt)
masks = predict_masks(InferenceCall(engine, eval_settings(cfg, ckpt, engine)), synthetic_xray())
print(engine.backend, masks.to_dense().shape[0], ckpt.loaded_model is None,
      [m for m in ("transformers.models.segformer.modeling_segformer", "torch._inductor", "sympy") if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "aot_inductor 29 True []"
