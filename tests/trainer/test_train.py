"""End-to-end training on the tiny phantom set: dry run, stage 1 -> stage 2, errors before training, NaN
loss, interrupt + resume, and two data-parallel CPU processes, with the `test` SegFormer at 128 px. Stage 1 and stage 2
are the shared tiny run's (``tiny_run``, also read by ``tests/test_pipeline.py``). A run whose process is what is
tested (a signal, a lock held by another process, the launch script and the launcher, two processes) is a real
subprocess of the training command; every other run calls the command's ``main`` in this process (``train_here``)."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from handseg.data.dataset_index import index_split, load_split
from tests.commands import run_main
from tests.trainer.helpers import REPO_ROOT, TINY_RUN_MODEL, run_train, tiny_config, train_here, write_yaml
from trainer import prepare
from trainer import train as train_command
from trainer.config import load_train_config

pytestmark = pytest.mark.slow

# Resume must reproduce the uninterrupted run's weights. On CPU with one thread the two runs execute the
# same operations in the same order, so the weights agree bit for bit; the stated tolerance leaves room
# only for float32 rounding.
RESUME_ATOL = 1e-6


def _info(folder: Path) -> dict:
    return json.loads((folder / "handseg.json").read_text())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_dryrun_through_the_launcher_exits_0_and_writes_nothing(phantom_root, tmp_path):
    out = tmp_path / "dry"
    raw = tiny_config(phantom_root, out, accelerate_config="config/accelerate/cpu.yaml", dryrun_steps=1)
    cfg = write_yaml(tmp_path / "dry.yaml", raw)
    proc = subprocess.run(["sh", "accelerate_train.sh", "--cfg-path", str(cfg), "--dryrun"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=240, env={**__import__("os").environ,
                                                                             "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DRY RUN" in proc.stdout and "mean Dice" in proc.stdout
    assert not (out / "best").exists() and not (out / "state").exists()


def test_stage1_writes_best_and_last_checkpoints(tiny_run):
    stage1 = tiny_run.stage1
    for name in ("best", "last"):
        folder = stage1 / name
        assert {"config.json", "model.safetensors", "handseg.json"} <= {p.name for p in folder.iterdir()}
        info = _info(folder)
        assert info["stage"] == 1 and info["model"]["arch"] == "segformer"
        assert info["input"]["mode"] == "resize" and info["input"]["image_size"] == 128
        assert info["config"]["epochs"] == 2 and len(info["data_fingerprint"]) > 0
        assert len(info["classes"]) == 29
    last = _info(stage1 / "last")
    assert (last["epoch"], last["step"]) == (2, 6)  # 6 training images, batch 2, 2 epochs
    assert set(last["dice"]) == set(last["classes"])
    best = _info(stage1 / "best")
    assert best["mean_dice"] == max(json.loads(p.read_text())["mean_dice"]
                                    for p in (stage1 / "validation").glob("epoch_*.json"))
    # Validation covered the whole validation fold once, by relative path.
    split = load_split(load_train_config(tiny_run.config_path("stage1")).data)
    report = json.loads((stage1 / "validation" / "epoch_002.json").read_text())
    assert sorted(report["per_image"]) == sorted(s.rel for s in split.val)
    assert (stage1 / "state").is_dir() and any((stage1 / "logs").rglob("events.out.tfevents*"))


def test_stage2_starts_from_stage1_best(tiny_run):
    stage1, out = tiny_run.stage1, tiny_run.stage2  # 2 steps at lr 1e-9
    info = _info(out / "best")
    assert info["stage"] == 2 and info["input"]["mode"] == "tile" and info["input"]["tile_size"] == 128
    # With lr 1e-9 two steps move no weight by more than ~2e-9: stage 2 must hold stage 1's best weights
    # (a fresh random init would differ by O(0.1)). BatchNorm statistics move in train mode whatever the lr.
    before, after = _weights(stage1 / "best"), _weights(out / "best")
    assert before.keys() == after.keys()
    params = [k for k in before if "running_" not in k and "num_batches_tracked" not in k]
    assert len(params) > 50
    assert max((before[k] - after[k]).abs().max().item() for k in params) < 1e-6


def test_cascade_stage2_starts_at_stage1_and_carries_it(tiny_run, phantom_root, tmp_path):
    """A cascade's stage 2 adds its output to stage 1's logits and starts at zero: with a negligible learning rate
    its validation (native tiles, stage 1 as the prior) gives stage 1's Dice. Its checkpoints carry stage 1."""
    stage1 = tiny_run.stage1
    out = tmp_path / "cascade"
    raw = tiny_config(phantom_root, out, stage=2, ckpt=str(stage1 / "best"), cascade=True, epochs=1,
                      max_train_steps_per_epoch=2, optim={"lr": 1e-9}, model=TINY_RUN_MODEL)
    proc = train_here(write_yaml(tmp_path / "cascade.yaml", raw))
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = _info(out / "best")
    assert info["prior"] == "prior" and info["input"]["mode"] == "tile"
    assert info["input"]["prior"] == _info(stage1 / "best")["input"]
    assert info["model"]["overrides"] == {"num_channels": 32}
    copied = (out / "best" / "prior" / "model.safetensors").read_bytes()
    assert copied == (stage1 / "best" / "model.safetensors").read_bytes()
    assert info["mean_dice"] == pytest.approx(_info(stage1 / "best")["mean_dice"], abs=2e-3)
    assert max(info["dice"].values()) > 0.01  # the masks overlap the bones: not two empty-mask Dice values


def test_a_cascade_in_stage_1_is_refused_before_training(phantom_root, tmp_path):
    bad = tiny_config(phantom_root, tmp_path / "cascade_bad", stage=1, cascade=True)
    proc = run_main(train_command.main, "--cfg-path", write_yaml(tmp_path / "cascade_bad.yaml", bad))
    assert proc.returncode == 2 and "cascade" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "cascade_bad").exists()


def test_stage2_checkpoint_errors_come_before_training(tiny_run, phantom_root, tmp_path):
    out = tmp_path / "stage2_bad"
    missing = tiny_config(phantom_root, out, stage=2, ckpt=str(tmp_path / "nope" / "best"))
    proc = run_main(train_command.main, "--cfg-path", write_yaml(tmp_path / "bad_missing.yaml", missing))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bad_missing.yaml: ckpt:" in proc.stderr and "not found" in proc.stderr
    other = tiny_config(phantom_root, out, stage=2, ckpt=str(tiny_run.stage1 / "best"),
                        model={"arch": "upernet", "preset": "test"})
    proc = run_main(train_command.main, "--cfg-path", write_yaml(tmp_path / "bad_arch.yaml", other))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "bad_arch.yaml: ckpt:" in proc.stderr and "segformer/test" in proc.stderr
    assert not out.exists()


def test_nan_loss_stops_with_the_step(phantom_root, tmp_path):
    out = tmp_path / "nan"
    raw = tiny_config(phantom_root, out, optim={"lr": 1e30}, clip_grad_norm=None,
                      schedule={"name": "constant", "warmup_steps": 0})
    proc = train_here(write_yaml(tmp_path / "nan.yaml", raw))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: loss is") and "at step 2 " in line, line


@pytest.fixture(scope="module")
def resumed(phantom_root, tmp_path_factory) -> dict:
    """A 2-epoch reference run, and a 1-epoch run resumed with ``epochs: 2`` (constant schedule, so the run length
    does not enter the learning rate) after crafted pickles were put in its ``state/``, where Accelerate's own format
    keeps its pickles. Returns the folders, the config and the resume's process."""
    work = tmp_path_factory.mktemp("resume")
    schedule = {"name": "constant", "warmup_steps": 0}
    ref_out, out = work / "resume_ref", work / "resume"
    proc = train_here(write_yaml(work / "resume_ref.yaml", tiny_config(phantom_root, ref_out, schedule=schedule)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = tiny_config(phantom_root, out, epochs=1, schedule=schedule)
    cfg = write_yaml(work / "resume.yaml", raw)
    assert train_here(cfg).returncode == 0 and _info(out / "last")["epoch"] == 1
    marker = work / "unpickle_ran"
    payload = pickle.dumps(_Payload(marker))
    for name in ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl"):
        (out / "state" / name).write_bytes(payload)
    proc = train_here(write_yaml(cfg, {**raw, "epochs": 2, "resume": True}))
    return {"ref": ref_out, "out": out, "raw": raw, "proc": proc, "marker": marker}


def test_resumed_run_matches_uninterrupted(resumed):
    """A 1-epoch run, resumed with ``epochs: 2``, ends with the weights of a 2-epoch run."""
    proc, ref_out, out = resumed["proc"], resumed["ref"], resumed["out"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout and "epoch 1, step 3" in proc.stdout
    assert _info(out / "last")["epoch"] == 2 and _info(out / "last")["step"] == 6
    ref, got = _weights(ref_out / "last"), _weights(out / "last")
    assert ref.keys() == got.keys()
    worst = max((ref[k].float() - got[k].float()).abs().max().item() for k in ref)
    assert worst <= RESUME_ATOL
    assert _info(out / "last")["dice"] == _info(ref_out / "last")["dice"]


def test_two_processes_count_every_image_once_and_agree_on_weights(phantom_root, tmp_path):
    out = tmp_path / "ddp"
    # 3 validation images over 2 processes (an uneven shard) to catch padding or double counting.
    raw = tiny_config(phantom_root, out, epochs=1, max_train_steps_per_epoch=2,
                      data={"n_folds": 2, "fold": 1}, val={"batch_size": 4, "max_images": 3})
    # Accelerate 1.x starts several CPU processes only through its torchrun path (`--multi_gpu`); the
    # processes then run on the CPU with the gloo backend because ACCELERATE_USE_CPU is set.
    launcher = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                str(_free_port())]
    env = {"ACCELERATE_USE_CPU": "1"}
    proc = run_train(write_yaml(tmp_path / "ddp.yaml", raw), launcher=launcher, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "on 2 process(es)" in proc.stdout
    assert "weights identical on 2 processes" in proc.stdout  # the trainer compares every process's sha256
    report = json.loads((out / "validation" / "epoch_001.json").read_text())
    split = load_split(load_train_config(tmp_path / "ddp.yaml").data)
    expected = sorted(s.rel for s in split.val[:3])
    assert report["n_images"] == 3 and sorted(report["per_image"]) == expected
    assert len(index_split(phantom_root)) == 8
    # Each process saved its own generator states; the main process the shared files.
    state = json.loads((out / "state" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2
    expected = {"rng_0.safetensors", "rng_1.safetensors", "model.safetensors", "optimizer.safetensors"}
    assert expected <= set(state["files"])
    from trainer.tree_io import load_tree  # each process drew its own dropout / drop-path masks (seed + rank)

    assert not torch.equal(load_tree(out / "state", "rng_0")["torch"], load_tree(out / "state", "rng_1")["torch"])
    shutil.rmtree(out / "state", ignore_errors=True)


def _free_port() -> int:
    """A TCP port free on this machine now (for the process group), so that runs side by side do not collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _popen_train(cfg: Path, *extra: str, script: bool = False) -> subprocess.Popen:
    """A training run in the background (the training command, or `sh accelerate_train.sh` with ``script``)."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    cmd = ["sh", "accelerate_train.sh", "--cfg-path", str(cfg)] if script else \
        [sys.executable, "-m", "trainer.train", "--cfg-path", str(cfg)]
    return subprocess.Popen([*cmd, *extra], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_training(proc: subprocess.Popen) -> None:
    """Read the run's output up to its announcement line (printed after setup, before the first batch)."""
    for line in proc.stdout:
        if line.startswith("stage 1 | "):
            return
    raise AssertionError(f"training did not start: {proc.communicate(timeout=60)[1][-3000:]}")


def test_mid_epoch_stop_resumes_bit_identical(phantom_root, tmp_path):
    """SIGTERM within the first epoch, then ``resume: true``: ``best/``, ``last/`` and the EMA equal the uninterrupted
    run's bit for bit (the README's promise: exact resume at any step)."""
    import signal

    # 6 batches per epoch (batch 1), the 256 px input so that a batch takes a while, EMA on: more state to restore.
    common = dict(data={"batch_size": 1, "image_size": 256}, ema={"enabled": True, "decay": 0.9}, epochs=2)
    ref_out, out = tmp_path / "midepoch_ref", tmp_path / "midepoch"
    proc = train_here(write_yaml(tmp_path / "midepoch_ref.yaml", tiny_config(phantom_root, ref_out, **common)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = tiny_config(phantom_root, out, **common)
    cfg = write_yaml(tmp_path / "midepoch.yaml", raw)
    proc = _popen_train(cfg)
    _wait_for_training(proc)  # the signal lands before or during the first batches of epoch 1
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130 and "resumable state saved" in stderr, stderr[-3000:]
    proc = train_here(write_yaml(cfg, {**raw, "resume": True}))
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed_at = re.search(rf"resumed from {re.escape(str(out / 'state'))}: epoch 0, step (\d+)", proc.stdout)
    assert resumed_at and 1 <= int(resumed_at.group(1)) < 6  # stopped inside the first epoch (batch 1: step = batch)
    for name in ("last", "best"):
        ref, got = _weights(ref_out / name), _weights(out / name)
        assert ref.keys() == got.keys()
        assert all(torch.equal(ref[k], got[k]) for k in ref), name  # bit for bit
        assert _info(out / name)["dice"] == _info(ref_out / name)["dice"]


def test_second_run_on_the_same_output_dir_is_refused(phantom_root, tmp_path):
    """A second training on a folder in use is refused in one line naming the first's PID; Ctrl-C (SIGINT) then stops
    the first: exit 130, its state saved (resuming a stopped run: ``test_mid_epoch_stop_resumes_bit_identical``)."""
    import signal

    from accelerate.state import AcceleratorState

    out = tmp_path / "locked"
    first = _popen_train(write_yaml(tmp_path / "locked_a.yaml", tiny_config(phantom_root, out, epochs=50)))
    try:
        _wait_for_training(first)
        try:
            second = run_main(train_command.main, "--cfg-path",
                              write_yaml(tmp_path / "locked_b.yaml", tiny_config(phantom_root, out, epochs=1)))
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)  # the refused run built one in this process
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {out}: in use by another training (PID {first.pid} ")
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=240)
    assert first.returncode == 130 and "resumable state saved" in stderr and "Traceback" not in stderr
    assert (out / "state" / "trainer_state.json").is_file()
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.old"))  # nothing of the refused run's


def test_sigterm_to_the_launch_script_reaches_the_trainer(phantom_root, tmp_path):
    """``kill`` of what ``sh accelerate_train.sh`` started (as Docker or a scheduler sends it): the trainer saves its
    state, the launch exits 130, and no process is left behind."""
    import psutil

    out = tmp_path / "launched"
    raw = tiny_config(phantom_root, out, epochs=50, accelerate_config="config/accelerate/cpu.yaml")
    proc = _popen_train(write_yaml(tmp_path / "launched.yaml", raw), script=True)
    descendants = []
    try:
        _wait_for_training(proc)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert any("trainer.train" in " ".join(p.cmdline()) for p in descendants)
        proc.terminate()
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 130, stderr[-3000:]
        assert "resumable state saved" in stderr and "Traceback" not in stderr
        assert (out / "state" / "trainer_state.json").is_file()
        gone, alive = psutil.wait_procs(descendants, timeout=30)
        assert not alive
    finally:
        for p in descendants:  # only if the test failed: processes it started
            if p.is_running():
                p.kill()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_error_inside_the_launched_trainer_is_one_line_exit_2(phantom_root, tmp_path):
    """An error raised after launch (``resume: true`` without a saved state) through ``accelerate_train.sh``: the
    trainer's one line, exit 2, no launcher traceback."""
    out = tmp_path / "nostate"
    raw = tiny_config(phantom_root, out, resume=True, accelerate_config="config/accelerate/cpu.yaml")
    cfg = write_yaml(tmp_path / "nostate.yaml", raw)
    run_main(prepare.main, "--cfg-path", cfg)  # the cache an earlier run built: stderr holds only what the launch says
    proc = subprocess.run(["sh", "accelerate_train.sh", "--cfg-path", str(cfg)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=240, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "CalledProcessError" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {cfg}: resume: no saved state in {out / 'state'}"]


def test_resume_never_unpickles_and_names_a_damaged_file(resumed, tmp_path):
    """A crafted pickle in ``state/`` is never loaded on resume; a truncated optimiser file is one line, exit 2."""
    assert not resumed["marker"].exists()
    assert resumed["proc"].returncode == 0, resumed["proc"].stderr[-3000:]
    assert _info(resumed["out"] / "last")["epoch"] == 2

    out = tmp_path / "resume"  # a copy: the shared run stays as it is
    shutil.copytree(resumed["out"], out)
    raw = {**resumed["raw"], "output_dir": str(out), "epochs": 3, "resume": True}
    optimizer = next(p for p in sorted((out / "state").iterdir()) if p.name.startswith("optimizer") and
                     p.suffix in (".bin", ".safetensors"))
    optimizer.write_bytes(optimizer.read_bytes()[:1000])
    proc = train_here(write_yaml(tmp_path / "resume.yaml", raw))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {optimizer}: ")


class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_trainer_stops_when_its_launcher_is_killed(phantom_root, tmp_path):
    """The launcher killed outright (SIGKILL: nothing can pass a signal on) leaves the trainer to another parent;
    the trainer notices, saves its state and exits instead of running on unsupervised. Where the launcher piped the
    trainer's output (Accelerate >= 1.16), that output now has no reader: the trainer's last words are lost, its
    state is not."""
    import os
    import signal

    import psutil

    out = tmp_path / "orphan"
    raw = tiny_config(phantom_root, out, epochs=50, accelerate_config="config/accelerate/cpu.yaml")
    launch = _popen_train(write_yaml(tmp_path / "orphan.yaml", raw), script=True)
    trainer = None
    try:
        _wait_for_training(launch)
        trainer = next(p for p in psutil.Process(launch.pid).children() if "trainer.train" in " ".join(p.cmdline()))
        os.kill(launch.pid, signal.SIGKILL)
        _, stderr = launch.communicate(timeout=240)  # the pipes close when the trainer, which shares them, exits
        trainer.wait(timeout=60)  # not our child: its exit code cannot be read
        assert "Traceback" not in stderr
        assert (out / "state" / "trainer_state.json").is_file()
    finally:
        if trainer is not None and trainer.is_running():
            trainer.kill()
        if launch.poll() is None:
            launch.kill()
