"""What accelerate_train.sh runs before the trainer (trainer/launch.py, trainer/prepare.py) and the launcher's
report of a process killed by SIGKILL."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from tests.trainer.helpers import REPO_ROOT, tiny_config, write_yaml
from trainer import launch, prepare


def test_gpu_config_on_a_machine_without_usable_cuda_stops_before_any_work(phantom_root, tmp_path, monkeypatch,
                                                                          capsys):
    def unavailable() -> bool:
        warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old (found version 11040).")
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    cfg = write_yaml(tmp_path / "gpu.yaml", tiny_config(phantom_root, tmp_path / "run",
                                                        accelerate_config="config/accelerate/single_gpu.yaml"))
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(SystemExit) as exit_:
        launch.main(["--cfg-path", str(cfg)])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config/accelerate/single_gpu.yaml: use_cpu: a GPU config")
    assert "driver on your system is too old" in lines[0]
    assert lines[0].endswith("to run on the CPU anyway: --set accelerate_config=config/accelerate/cpu.yaml")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()  # no work was done


def test_the_cache_is_built_before_the_processes_start(phantom_root, tmp_path, capsys):
    """trainer.prepare builds the stage's cache of the whole split in one process, as the trainer then opens it;
    the launch passes the same config, dry run and --set on to the trainer."""
    from handseg.data.dataset_index import load_split
    from trainer.config import load_train_config
    from trainer.loader import DatasetOptions, build_dataset

    cfg_path = write_yaml(tmp_path / "cfg.yaml", tiny_config(phantom_root, tmp_path / "run"))
    prepare.main(["--cfg-path", str(cfg_path), "--set", "data.image_size=96"])
    assert capsys.readouterr().out.startswith("cache built: ")
    prepare.main(["--cfg-path", str(cfg_path), "--set", "data.image_size=96"])
    assert capsys.readouterr().out.startswith("cache found: ")
    cfg = load_train_config(cfg_path, sets=["data.image_size=96"])
    split = load_split(cfg.data)
    dataset = build_dataset(cfg.data, split.train, 1, DatasetOptions(cache_samples=split.samples, progress=False))
    assert not dataset.cache.built_now and dataset.cache.path.name == "r96"
    args, rest = launch.parse_args(["--cfg-path", "c.yaml", "--dryrun", "--set", "a=1", "--", "--num_processes", "2"])
    assert launch.trainer_args(args) == ["--cfg-path", "c.yaml", "--dryrun", "--set", "a=1"]
    assert rest == ["--num_processes", "2"]


def test_a_process_killed_by_sigkill_is_reported_as_out_of_memory(tmp_path):
    script = tmp_path / "eat.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-m", "handseg.runtime.launcher", "--quiet", "--config_file",
                           "config/accelerate/cpu.yaml", str(script)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 137
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: a launched process was killed with SIGKILL (exit 137), most likely by the "
                                "kernel's out-of-memory killer")
    assert "--set data.batch_size=2" in lines[-1] and "Traceback" not in proc.stderr


def test_torchrun_failures_prefer_the_killed_rank():
    from handseg.runtime.launcher import failure_code

    class Failure:
        def __init__(self, exitcode):
            self.exitcode = exitcode

    class ChildFailed(Exception):
        failures = {0: Failure(-15), 1: Failure(-9)}  # rank 1 OOM-killed, rank 0 then stopped by torchrun

    assert failure_code(ChildFailed()) == 137
