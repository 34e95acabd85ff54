"""The GPU path a user runs, as one sequence of commands: the shipped configs chained end to end.

:data:`CHAIN` is the README's GPU section, command for command. :func:`run_chain` runs it in a working folder that
holds a copy of ``config/`` and a ``data`` link (:func:`make_workdir`), adding ``--set`` overrides per step that
change sizes and the device only, never where a step writes or reads: the configs' own relative paths (``data/``,
``runs/<run_name>``, ``ckpt``, ``checkpoint``, ``trt_models``, ``outputs/eval``) must connect as shipped. Two
profiles: :data:`CPU_TINY` (the test on a CPU: the `test` model, tiny images, one step per stage) and
:data:`GPU_SMOKE` (the GPU configs' own sizes, a few steps per stage, random initial weights).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHAIN: list[tuple[str, str]] = [
    ("stage1", "sh accelerate_train.sh --cfg-path config/train_stage1.yaml"),
    ("stage2", "sh accelerate_train.sh --cfg-path config/train_stage2.yaml"),
    ("engine", "python tensorrt_aot.py --cfg-path config/eval.yaml"),
    ("validation", "sh accelerate_eval.sh --mode validation --cfg-path config/eval.yaml"),
    ("submission", "sh accelerate_eval.sh --mode submission --cfg-path config/eval.yaml"),
    ("efficiency", "python evaluate_efficiency.py --cfg-path config/eval.yaml"),
]

_CPU_TRAIN = ["accelerate_config=config/accelerate/cpu.yaml", "model.preset=test", "data.batch_size=2",
              "data.num_workers=0", "epochs=1", "max_train_steps_per_epoch=1", "val.max_images=1"]
_CPU_EVAL = ["device=cpu", "precision=fp32"]
CPU_TINY: dict[str, list[str]] = {
    "stage1": [*_CPU_TRAIN, "model.pretrained=null", "data.image_size=64"],
    "stage2": [*_CPU_TRAIN, "data.crop_size=128"],
    "engine": _CPU_EVAL,
    "validation": _CPU_EVAL,
    "submission": _CPU_EVAL,
    "efficiency": [*_CPU_EVAL, "efficiency.warmup=1", "efficiency.iters=1", "efficiency.image_iters=1",
                   "efficiency.image_size=256"],
}
_GPU_TRAIN = ["epochs=1", "max_train_steps_per_epoch=2", "val.max_images=1"]
GPU_SMOKE: dict[str, list[str]] = {
    "stage1": [*_GPU_TRAIN, "model.pretrained=null"],  # the GPU machine may not reach the hub
    "stage2": _GPU_TRAIN,
    "engine": [],
    "validation": [],
    "submission": [],
    "efficiency": ["efficiency.warmup=3", "efficiency.iters=10", "efficiency.image_iters=2"],
}


@dataclass
class StepResult:
    """One command of the chain as it ran: its name, command line, exit code, seconds and output."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    stdout: str
    stderr: str


def make_workdir(workdir: Path, data: Path) -> Path:
    """``workdir`` with a fresh copy of the repository's ``config/`` and ``data`` linked to the data root ``data``."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "config", ignore_errors=True)
    shutil.copytree(REPO / "config", workdir / "config")
    link = workdir / "data"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(data).resolve(), target_is_directory=True)
    return workdir


def command_line(text: str, sets: list[str]) -> list[str]:
    """A chain command as run from another folder: the repository's script by its path, with ``--set`` added."""
    tool, script, *args = text.split()
    runner = ["sh"] if tool == "sh" else [sys.executable]
    return [*runner, str(REPO / script), *args, *[item for s in sets for item in ("--set", s)]]


def run_step(workdir: Path, name: str, text: str, sets: list[str], timeout: int = 600) -> StepResult:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    cmd = command_line(text, sets)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    return StepResult(name, cmd, proc.returncode, time.perf_counter() - t0, proc.stdout, proc.stderr)


def run_chain(workdir: Path, profile: dict[str, list[str]], stop_on_error: bool = True,
              echo: bool = False) -> list[StepResult]:
    """Run :data:`CHAIN` in ``workdir`` (see :func:`make_workdir`) with the ``--set`` overrides of ``profile``."""
    results = []
    for name, text in CHAIN:
        result = run_step(workdir, name, text, profile.get(name, []))
        results.append(result)
        if echo:
            print(f"  {name}: exit {result.returncode} in {result.seconds:.1f} s", flush=True)
        if result.returncode != 0 and stop_on_error:
            break
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the GPU chain of commands in a working folder")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a data root in the competition layout")
    parser.add_argument("--profile", choices=["cpu-tiny", "gpu-smoke"], default="cpu-tiny")
    args = parser.parse_args(argv)
    make_workdir(args.workdir, args.data)
    results = run_chain(args.workdir, CPU_TINY if args.profile == "cpu-tiny" else GPU_SMOKE, echo=True)
    failed = next((r for r in results if r.returncode != 0), None)
    if failed is not None:
        print(failed.stderr[-3000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
