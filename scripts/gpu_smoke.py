"""The GPU paths, run and measured: one command for a machine with an NVIDIA GPU (about 10 minutes on one H100).

    sh scripts/gpu_smoke.sh [--out outputs/gpu_smoke] [--workdir DIR] [--skip-steps] [--skip-chain]
    python scripts/gpu_smoke.py --cpu --out DIR      # the same plumbing at tiny sizes on the CPU (the tests run it)

Each part runs in a process of its own (a clean peak-memory count; a crash or an out-of-memory in one part does not
end the others), and ``<out>/gpu_smoke.json`` and ``gpu_smoke.md`` are rewritten after every part, so a run cut
short keeps what it measured:

1. ``steps``: training steps at the shipped GPU configs' sizes (stage 1: mit-b3 at 1024 px, batch 8, bf16;
   stage 2: the cascade on 1024 px crops, batch 4, fp16 and bf16): images/s and peak memory
   (``scripts/gpu_smoke_parts.py``);
2. ``costs``: the per-step costs of the issue's finding 8: the flags checked after every step or every 10 (from
   part 1), the stage-1 prior resampled per window or batched, one validation image in fp32 or bf16, the tile
   padding of the evaluation batch;
3. ``chain``: the README's GPU section (``scripts/gpu_chain.py``) on a small phantom data set at 2048 px with the
   configs' own sizes: stage 1, stage 2, the engines (TensorRT where it imports, else AOTInductor, with agreement
   against eager fp32), validation, submission, ``evaluate_efficiency.py`` (every engine, the engine's share of the
   image time, device memory);
4. ``multi``: a 2-process evaluation when two GPUs are visible (its mean Dice against the 1-process one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from gpu_chain import CPU_TINY, GPU_SMOKE, REPO, make_workdir, run_chain, run_step
from gpu_smoke_report import write_report


def run_part(out: Path, name: str, args: list[str], timeout: int = 300) -> dict:
    """One part of ``scripts/gpu_smoke_parts.py`` in its own process: its JSON, or its error."""
    target = out / "parts" / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "scripts/gpu_smoke_parts.py"), *args, "--json", str(target)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"status": "failed", "exit": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}
    return {"status": "ok", "seconds": round(time.perf_counter() - t0, 1), **json.loads(target.read_text())}


def step_parts(cpu: bool) -> list[tuple[str, list[str], str | None]]:
    """(name, arguments, why skipped) of the training-step parts."""
    flag = ["--cpu"] if cpu else []
    return [("stage1_bf16", ["--part", "steps", "--stage", "1", "--precision", "bf16", *flag], None),
            ("stage2_fp16", ["--part", "steps", "--stage", "2", "--precision", "fp16", *flag],
             "fp16 autocast needs a GPU" if cpu else None),
            ("stage2_bf16", ["--part", "steps", "--stage", "2", "--precision", "bf16", *flag], None)]


def make_data(workdir: Path, cpu: bool) -> Path:
    """A small phantom data set in the competition layout: 5 training persons (fold 0 of 5 holds one) and one test
    person, at 2048 px (256 on the CPU)."""
    data = workdir.parent / f"{workdir.name}_data"
    cmd = [sys.executable, str(REPO / "scripts/make_phantom.py"), "--out", str(data), "--train-ids", "5",
           "--test-ids", "1", "--size", "256" if cpu else "2048", "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return data


def chain_summary(workdir: Path, steps) -> dict:
    """What the chain did and measured: each step (exit, seconds, its start line and auto-backend lines), the
    engines' manifests, validation Dice and the efficiency table."""
    rows = []
    for r in steps:
        said = [line for line in (r.stdout + r.stderr).splitlines()
                if line.startswith(("start:", "backend auto", "error:", "mean Dice"))]
        rows.append({"step": r.name, "exit": r.returncode, "seconds": round(r.seconds, 1), "lines": said[:4],
                     "tail": r.stderr.strip().splitlines()[-3:] if r.returncode else []})
    engines = [{"file": p.with_suffix("").name, **{k: json.loads(p.read_text()).get(k) for k in
                                                   ("backend", "precision", "input_shape", "agreement_vs_eager_fp32")}}
               for p in sorted((workdir / "trt_models").glob("*.json"))]
    dice = workdir / "outputs/eval/dice.json"
    eff = workdir / "outputs/eval/efficiency/efficiency.json"
    return {"steps": rows, "engines": engines,
            "validation_mean_dice": json.loads(dice.read_text()).get("mean_dice") if dice.is_file() else None,
            "efficiency": json.loads(eff.read_text()) if eff.is_file() else None}


def multi_gpu(workdir: Path) -> dict:
    """Validation by 2 processes on 2 GPUs, against the chain's 1-process validation."""
    if torch.cuda.device_count() < 2:
        return {"status": "skipped", "why": f"{torch.cuda.device_count()} GPU(s) visible"}
    sets = ["output_dir=outputs/eval_2gpu"]
    result = run_step(workdir, "multi", "sh accelerate_eval.sh --accelerate-config config/accelerate/multi_gpu.yaml "
                      "--mode validation --cfg-path config/eval.yaml", sets)
    two = workdir / "outputs/eval_2gpu/dice.json"
    one = workdir / "outputs/eval/dice.json"
    return {"status": "ok" if result.returncode == 0 else "failed", "seconds": round(result.seconds, 1),
            "mean_dice_2_processes": json.loads(two.read_text()).get("mean_dice") if two.is_file() else None,
            "mean_dice_1_process": json.loads(one.read_text()).get("mean_dice") if one.is_file() else None,
            "lines": [ln for ln in result.stdout.splitlines() if ln.startswith("start:")],
            "tail": result.stderr.strip().splitlines()[-3:] if result.returncode else []}


def environment(cpu: bool) -> dict:
    info = {"mode": "cpu" if cpu else "gpu", "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if not cpu else []}
    try:
        import torch_tensorrt  # noqa: F401 - only its version is recorded

        info["torch_tensorrt"] = torch_tensorrt.__version__
    except Exception as exc:  # noqa: BLE001 - not installed, or broken: recorded, not fatal
        info["torch_tensorrt"] = f"not importable ({type(exc).__name__})"
    return info


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "outputs/gpu_smoke")
    p.add_argument("--workdir", type=Path, default=None, help="where the chain runs (default: a temporary folder)")
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: the plumbing, not the figures")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-chain", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: no usable CUDA device here; `python scripts/gpu_smoke.py --cpu` runs the plumbing on the CPU",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"environment": environment(args.cpu), "parts": {}}
    parts, t0 = result["parts"], time.perf_counter()

    def record(name: str, value: dict) -> None:
        parts[name] = value
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_report(result, args.out)
        print(f"[{result['seconds']:6.1f} s] {name}: {value.get('status', 'ok')}", flush=True)

    for name, part_args, skip in ([] if args.skip_steps else step_parts(args.cpu)):
        record(name, {"status": "skipped", "why": skip} if skip else run_part(args.out, name, part_args))
    if not args.skip_steps:
        record("costs", run_part(args.out, "costs", ["--part", "costs", *(["--cpu"] if args.cpu else [])]))
    if not args.skip_chain:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu_smoke_")) / "work"
        make_workdir(workdir, make_data(workdir, args.cpu))
        steps = run_chain(workdir, CPU_TINY if args.cpu else GPU_SMOKE, echo=True)
        summary = chain_summary(workdir, steps)
        record("chain", {"status": "ok" if all(s.returncode == 0 for s in steps) else "failed",
                         "workdir": str(workdir), **summary})
        record("multi", multi_gpu(workdir) if not args.cpu else {"status": "skipped", "why": "CPU mode"})
    failed = [n for n, v in parts.items() if v.get("status") == "failed"]
    print(f"results -> {args.out / 'gpu_smoke.json'}, {args.out / 'gpu_smoke.md'}" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
