"""A GPU config where CUDA is not usable stops before any work with one line saying how to run on the CPU; the
start line says what a run runs on."""

from __future__ import annotations

import warnings

import pytest
import torch

from handseg.runtime import devices
from handseg.runtime.errors import ConfigError
from handseg.runtime.launch_config import check_accelerate_devices, uses_gpus


@pytest.fixture()
def no_cuda(monkeypatch):
    """CUDA reported unusable, as with a driver older than the torch build needs (torch warns and says False)."""
    def unavailable() -> bool:
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).")
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)


def test_an_old_driver_is_named(no_cuda):
    problem = devices.cuda_problem()
    assert "finds no usable CUDA device" in problem and "driver on your system is too old" in problem


def test_gpu_accelerate_config_without_cuda_is_one_line(no_cuda, repo_root):
    single = repo_root / "config/accelerate/single_gpu.yaml"
    with pytest.raises(ConfigError) as err:
        check_accelerate_devices(single)
    assert err.value.file == single and err.value.key == "use_cpu"
    assert "--set accelerate_config=config/accelerate/cpu.yaml" in err.value.problem and "\n" not in str(err.value)
    check_accelerate_devices(repo_root / "config/accelerate/cpu.yaml")  # a CPU config runs anywhere
    check_accelerate_devices(single, ["--cpu"])  # so does a launch told --cpu


def test_more_processes_than_gpus_is_refused(monkeypatch, repo_root):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    multi = repo_root / "config/accelerate/multi_gpu.yaml"
    assert uses_gpus(multi) == 2 and uses_gpus(multi, ["--num_processes", "1"]) == 1
    with pytest.raises(ConfigError, match="asks for 2 GPUs, 1 visible"):
        check_accelerate_devices(multi)
    check_accelerate_devices(repo_root / "config/accelerate/single_gpu.yaml")
    with pytest.raises(ConfigError, match="asks for 2 GPUs"):
        devices.require_device("cuda:1", "eval.yaml")


def test_eval_device_without_cuda_is_one_line_for_every_command(no_cuda, repo_root, capsys):
    """The shipped eval config names cuda:0: each evaluation command stops at once, saying --set device=cpu."""
    import evaluate_efficiency
    import tensorrt_aot
    from evaluator import launch, run_eval

    cfg = str(repo_root / "config/eval.yaml")
    commands = [(tensorrt_aot.main, []), (evaluate_efficiency.main, []), (run_eval.main, ["--mode", "validation"]),
                (launch.main, ["--mode", "validation"])]
    for main, extra in commands:
        with pytest.raises(SystemExit) as exit_:
            main(["--cfg-path", cfg, *extra])
        assert exit_.value.code == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {cfg}: device: a GPU config, but ")
        assert lines[0].endswith("to run on the CPU anyway: --set device=cpu --set precision=fp32")


def test_start_line():
    assert devices.start_line(["cpu"], "no", 2, 1) == ("start: device cpu | world size 1 | mixed precision no | "
                                                       "effective batch 2 images x 1 process(es) x 1 accumulation "
                                                       "step(s) = 2")
    two = devices.start_line(["cuda:0 (H100)", "cuda:1 (H100)"], "bf16", 8, 2)
    assert "device cuda:0 (H100), cuda:1 (H100) | world size 2 | mixed precision bf16" in two and two.endswith("= 32")
    assert devices.start_line(["cuda:0 (H100)"], "fp16", 3, what="tiles").endswith("3 tiles x 1 process(es) = 3")


def test_a_direct_gpu_launch_that_lands_on_the_cpu_stops(no_cuda, monkeypatch):
    """``accelerate launch`` with a GPU config sets ACCELERATE_USE_CPU=False; the trainer then refuses the CPU."""
    from handseg.runtime.errors import HandSegError

    monkeypatch.setenv("ACCELERATE_USE_CPU", "False")
    with pytest.raises(HandSegError, match=r"GPU Accelerate config .*driver on your system is too old.*cpu\.yaml$"):
        devices.require_launched_device(torch.device("cpu"))
    devices.require_launched_device(torch.device("cuda", 0))
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    devices.require_launched_device(torch.device("cpu"))
