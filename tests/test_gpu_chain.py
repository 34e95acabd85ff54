"""The GPU path as a user runs it: the shipped GPU configs, unedited, chained end to end on the CPU, and the GPU smoke
run's plumbing. One run of ``scripts/gpu_smoke.py --cpu`` does both: its training-step and cost parts at tiny sizes,
then the README's GPU section (``scripts/gpu_chain.py``) in a folder holding a copy of ``config/`` and a ``data``
link, with ``--set`` overrides for size and device only. Every step of the chain is a process of its own, as a user
runs it (the trainings and evaluations through ``accelerate_*.sh`` and the launcher); ``gpu_smoke.py`` itself runs
in this process."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.commands import load_script, run_main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("gpu_chain", REPO / "scripts" / "gpu_chain.py")
gpu_chain = sys.modules.setdefault("gpu_chain", importlib.util.module_from_spec(_SPEC))
_SPEC.loader.exec_module(gpu_chain)

# What a --set may change in the chain: sizes, steps, the device and its precision, no download. Never a path a
# step writes or reads (run_name, output_dir, ckpt, checkpoint, data_root, engine_dir, ...).
SIZE_AND_DEVICE_KEYS = {"accelerate_config", "model.preset", "model.pretrained", "data.image_size", "data.crop_size",
                        "data.batch_size", "data.num_workers", "epochs", "max_train_steps_per_epoch",
                        "val.max_images", "device", "precision", "efficiency.warmup", "efficiency.iters",
                        "efficiency.image_iters", "efficiency.image_size"}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _repo_state() -> dict[str, int]:
    """Every file (and its mtime) under the repository's folders that the configs' relative paths name; not the
    compile cache that the test session itself shares between its processes (``TORCHINDUCTOR_CACHE_DIR``)."""
    skip = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", REPO / ".cache" / "inductor")).resolve()
    state = {}
    for folder in (REPO / name for name in ("runs", "trt_models", "outputs", "data", ".cache")):
        for parent, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if Path(parent, d).resolve() != skip]
            state.update({str(Path(parent, f)): Path(parent, f).stat().st_mtime_ns for f in files})
            state.update({str(Path(parent, d)): Path(parent, d).stat().st_mtime_ns for d in dirs})
    return state


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One CPU smoke run; returns (output folder, chain folder, the process, the repository before and after)."""
    root = tmp_path_factory.mktemp("gpu_smoke")
    out, work = root / "out", root / "work"
    before = _repo_state()  # the steps' processes inherit one thread each from tests/conftest.py
    proc = run_main(load_script("gpu_smoke").main, "--cpu", "--out", out, "--workdir", work, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, work, proc, (before, _repo_state())


def test_the_chain_overrides_only_size_and_device():
    for step, sets in gpu_chain.CPU_TINY.items():
        keys = {s.partition("=")[0] for s in sets}
        assert keys <= SIZE_AND_DEVICE_KEYS, (step, keys - SIZE_AND_DEVICE_KEYS)
    assert [name for name, _ in gpu_chain.CHAIN] == ["stage1", "stage2", "engine", "validation", "submission",
                                                     "efficiency"]


def test_readme_gpu_section_is_the_chain():
    """The README's GPU section is exactly the chain's commands (the test's overrides removed)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## The GPU path", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    assert block.strip().splitlines() == [command for _, command in gpu_chain.CHAIN]


def test_shipped_gpu_configs_connect_end_to_end(smoke):
    """Stage 1 -> stage 2 -> engines -> validation -> submission -> efficiency with the configs' own paths; the
    configs are the repository's, unedited, and the efficiency benchmark finds every engine it needs built."""
    out, work, _, (before, after) = smoke
    assert after == before  # nothing was written into the repository: the chain's paths are its folder's
    parts = json.loads((out / "gpu_smoke.json").read_text())["parts"]
    chain = parts["chain"]
    assert chain["status"] == "ok" and [s["exit"] for s in chain["steps"]] == [0] * 6
    assert _digest(work / "config") == _digest(REPO / "config")  # nothing edited between steps
    stage1, stage2 = work / "runs/stage1_mitb3_1024", work / "runs/stage2_mitb3_crop1024"
    info = json.loads((stage2 / "best/handseg.json").read_text())
    assert (stage1 / "best/model.safetensors").is_file() and info["prior"] == "prior"  # stage 2 from stage 1
    assert (stage2 / "best/prior/model.safetensors").read_bytes() == (stage1 / "best/model.safetensors").read_bytes()
    engines = sorted(p.name for p in (work / "trt_models").glob("*.pt2"))
    assert engines == ["stage2_mitb3_crop1024-best_aot_inductor_fp32_b1_t128.pt2",  # the b3 engine's tail
                       "stage2_mitb3_crop1024-best_aot_inductor_fp32_b3_t128.pt2",
                       "stage2_mitb3_crop1024-best_prior_aot_inductor_fp32_b1_t64.pt2"]
    dice = json.loads((work / "outputs/eval/dice.json").read_text())["settings"]
    assert dice["checkpoint"] == "runs/stage2_mitb3_crop1024/best" and dice["tile_batch"] == 3
    assert (work / "outputs/eval/submission.csv").read_text().startswith("image_name,class,rle")
    rows = json.loads((work / "outputs/eval/efficiency/efficiency.json").read_text())["results"]
    assert {r["engine"] for r in rows} == {"eager_fp32", "eager_autocast_bf16", "aot_inductor_fp32"}
    assert {r["batch"] for r in rows} == {3}  # and it compiled nothing: the engines above are all there are


def test_launched_validation_equals_a_direct_run(smoke, tmp_path, monkeypatch):
    """``accelerate_eval.sh --mode validation`` (the launcher, then the evaluator in a process of its own) writes the
    Dice that the evaluator's ``run`` gives in this process with the same config and engines, and its report."""
    from evaluator.config import load_eval_config
    from evaluator.run_eval import run

    out, work, _, _ = smoke
    step = next(s for s in json.loads((out / "gpu_smoke.json").read_text())["parts"]["chain"]["steps"]
                if s["step"] == "validation")
    assert any(line.startswith("mean Dice") for line in step["lines"])
    launched = json.loads((work / "outputs/eval/dice.json").read_text())
    assert (work / "outputs/eval/report.html").stat().st_size > 10_000
    monkeypatch.chdir(work)  # the config's own relative paths
    cfg = load_eval_config(Path("config/eval.yaml"), overrides={"output_dir": str(tmp_path / "direct")},
                           sets=gpu_chain.CPU_TINY["validation"])
    direct = run("validation", cfg)["summary"]
    assert launched["mean_dice"] == pytest.approx(direct.mean, abs=1e-4)
    assert launched["per_class"] == pytest.approx(direct.per_class, abs=1e-4)


def test_every_step_prints_its_start_line(smoke):
    out = smoke[0]
    steps = {s["step"]: s for s in json.loads((out / "gpu_smoke.json").read_text())["parts"]["chain"]["steps"]}
    assert steps["stage1"]["lines"][0] == ("start: device cpu | world size 1 | mixed precision no | effective batch 2 "
                                           "images x 1 process(es) x 1 accumulation step(s) = 2")
    assert steps["stage2"]["lines"][0].endswith("x 2 accumulation step(s) = 4")  # the config's grad_accum_steps
    for name in ("engine", "validation", "submission", "efficiency"):
        assert steps[name]["lines"][0] == ("start: device cpu | world size 1 | mixed precision fp32 | effective "
                                           "batch 3 tiles x 1 process(es) = 3"), name


def test_smoke_run_records_json_and_tables(smoke):
    out, _, proc, _ = smoke
    result = json.loads((out / "gpu_smoke.json").read_text())
    parts = result["parts"]
    assert parts["stage1_bf16"]["status"] == "ok" and parts["stage2_bf16"]["status"] == "ok"
    assert parts["stage2_fp16"] == {"status": "skipped", "why": "fp16 autocast needs a GPU"}
    for name in ("stage1_bf16", "stage2_bf16"):
        assert parts[name]["images_per_s_check_every_step"] > 0 and parts[name]["images_per_s_check_every_10"] > 0
    costs = parts["costs"]
    assert costs["resampling"]["identical"] is True
    assert {p["batch"]: p["padded_slots"] for p in costs["padding"]} == {3: 0, 4: 3}  # 9 tiles per image
    assert parts["multi"] == {"status": "skipped", "why": "CPU mode"}
    table = (out / "gpu_smoke.md").read_text()
    for heading in ("## Training steps", "## Per-step costs (finding 8)", "## The chain", "evaluate_efficiency.py"):
        assert heading in table
    assert "identical: True" in table and "aot_inductor_fp32" in table
    assert "results ->" in proc.stdout
