"""The TensorRT paths a CPU can show, with fake installs: a broken Torch-TensorRT (an import that fails, a build for
another torch, a compile that raises) makes ``backend: auto`` fall back to AOTInductor with one line saying why and
stays an error when ``tensorrt`` is asked for; an engine built on cuda:0 is loaded onto each process's own GPU;
half-precision export leaves the checkpoint's model fp32 bit for bit; torch-tensorrt is pinned to torch's minor."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import torch
import torch.export.passes

from evaluator import backends, compile_trt
from evaluator.backends import BACKENDS, Backend, BackendUnavailableError
from evaluator.build_engine import EngineRequest, build_engine
from evaluator.config import load_eval_config
from evaluator.engines import load_engine, load_eval_checkpoint
from evaluator.export import export_logits
from evaluator.run_eval import process_device
from handseg.runtime.errors import HandSegError

from .conftest import synthetic_xray, write_eval_yaml


def _fake_torch_tensorrt(tmp_path: Path, monkeypatch, body: str) -> None:
    """A ``torch_tensorrt`` package with ``body`` as its __init__, importable from now on; CUDA reported usable."""
    pkg = tmp_path / "fake_trt" / "torch_tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(__import__("sys").modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(backends, "_SAID", set())


def test_an_install_that_does_not_import_falls_back_with_one_line(tmp_path, monkeypatch, capsys):
    _fake_torch_tensorrt(tmp_path, monkeypatch, "raise ImportError('libnvinfer.so.10: cannot open shared object')\n")
    assert "does not import (ImportError: libnvinfer.so.10" in compile_trt.tensorrt_missing("cuda:0")
    assert backends.resolve_backend("auto", "cuda:0") == "aot_inductor"
    assert backends.resolve_backend("auto", "cuda:0") == "aot_inductor"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backend auto: tensorrt cannot run (torch_tensorrt does not import")
    with pytest.raises(BackendUnavailableError, match=r"libnvinfer.*use --backend aot_inductor instead"):
        backends.require("tensorrt", "cuda:0")


def test_a_build_for_another_torch_is_named(tmp_path, monkeypatch):
    _fake_torch_tensorrt(tmp_path, monkeypatch, "__version__ = '2.13.0'\n")
    missing = compile_trt.tensorrt_missing("cuda:0")
    running = ".".join(torch.__version__.split(".")[:2])
    assert missing.startswith(f"torch_tensorrt 2.13.0 is built for torch 2.13, this is torch {torch.__version__}")
    assert f"torch-tensorrt=={running}.*" in missing


def _export_save(exported, example, out_path, device, level):
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(exported, str(out_path))
    return Path(out_path)


def _export_load(path, device):
    return torch.export.load(str(path)).module()


def _raising(exported, example, out_path, device, level):
    raise RuntimeError("[TRT] [E] IBuilder::buildSerializedNetwork: Error Code 2: out of memory")


@pytest.fixture()
def fake_backends(monkeypatch):
    """TensorRT that can run but fails to compile; AOTInductor whose 'compile' saves the exported program (fast)."""
    monkeypatch.setitem(BACKENDS, "tensorrt", Backend("tensorrt", ".ep", lambda d: None, _raising, _export_load))
    monkeypatch.setitem(BACKENDS, "aot_inductor", Backend("aot_inductor", ".pt2", lambda d: None, _export_save,
                                                          _export_load))


def test_a_tensorrt_compile_that_fails_falls_back_under_auto_only(tmp_path, tiny_ckpt, fake_backends, capsys):
    cfg = load_eval_config(write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, tmp_path / "engines", tmp_path / "out",
                                           backend="auto"))
    ckpt = load_eval_checkpoint(cfg)
    path, manifest = build_engine(cfg, ckpt, synthetic_xray())
    assert manifest["backend"] == "aot_inductor" and path.suffix == ".pt2"
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"backend auto: TensorRT could not compile {tiny_ckpt} (RuntimeError: [TRT] [E]")
    assert line.endswith("; using aot_inductor") and "\n" not in line
    assert load_engine(cfg, ckpt).backend == "aot_inductor"  # auto loads the engine that was built
    with pytest.raises(HandSegError, match=r"^TensorRT could not compile .*use --backend aot_inductor instead$"):
        build_engine(cfg, ckpt, synthetic_xray(), EngineRequest(backend="tensorrt"))


def test_half_precision_export_leaves_the_model_fp32_bit_for_bit(tmp_path, tiny_ckpt, fake_backends):
    cfg = load_eval_config(write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, tmp_path / "engines", tmp_path / "out",
                                           backend="aot_inductor", precision="bf16"))
    ckpt = load_eval_checkpoint(cfg)
    before = {k: v.clone() for k, v in ckpt.model.state_dict().items()}
    export_logits(ckpt.model, (1, 3, 64, 64), 32, precision="bf16")
    build_engine(cfg, ckpt, synthetic_xray())
    after = ckpt.model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_an_engine_loads_onto_each_processs_own_gpu(monkeypatch, tmp_path):
    """Torch-TensorRT deserialises an engine onto the current CUDA device: load_trt makes the target current and
    moves the program's other tensors there."""
    seen = {}

    class Device(contextlib.AbstractContextManager):
        current = 0

        def __init__(self, device):
            self.index = torch.device(device).index

        def __enter__(self):
            self.previous, Device.current = Device.current, self.index

        def __exit__(self, *exc):
            Device.current = self.previous

    class Program:
        def module(self):
            return "module on " + seen["moved_to"]

    fake = type("torch_tensorrt", (), {"load": staticmethod(lambda path: seen.update(loaded_on=Device.current)
                                                            or Program())})
    monkeypatch.setattr(compile_trt, "_torch_tensorrt", lambda: fake)
    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.export.passes, "move_to_device_pass",
                        lambda program, location: seen.update(moved_to=location) or program)
    assert compile_trt.load_trt(tmp_path / "engine.ep", "cuda:1") == "module on cuda:1"
    assert seen == {"loaded_on": 1, "moved_to": "cuda:1"} and Device.current == 0

    class Accelerator:
        num_processes, device = 2, torch.device("cuda", 1)

    assert process_device("cuda:0", Accelerator()) == "cuda:1"  # each evaluation process its own GPU


def test_torch_tensorrt_is_pinned_to_torchs_minor(repo_root):
    extra = re.findall(r'"([^"]+)"', re.search(r"^tensorrt = \[(.*?)\]", (repo_root / "pyproject.toml").read_text(),
                                                re.M).group(1))
    pinned = re.search(r"^torch==(\d+)\.(\d+)\.", (repo_root / "requirements.txt").read_text(), re.M).groups()
    major, minor = map(int, pinned)
    assert extra == [f"torch-tensorrt>={major}.{minor},<{major}.{minor + 1}"]
    assert torch.__version__.startswith(f"{major}.{minor}.")
