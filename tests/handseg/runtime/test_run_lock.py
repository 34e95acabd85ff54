"""The run-folder lock: a second holder is refused with one line naming the folder and the holder's PID; the lock
of a process that died (kill -9) does not block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from handseg.runtime.run_lock import FolderInUseError, RunLock
from tests.trainer.helpers import REPO_ROOT

HOLD = "import sys, time; from handseg.runtime.run_lock import RunLock; " \
       "lock = RunLock(sys.argv[1], 'training').acquire(); " \
       "print('held', flush=True); time.sleep(120)"


def _holder(folder) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_the_holders_pid(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        with pytest.raises(FolderInUseError) as err:
            RunLock(folder, "training").acquire()
        message = str(err.value)
        assert message.startswith(f"{folder}: in use by another training (PID {holder.pid} on ")
        assert "choose another output_dir" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with RunLock(folder, "evaluation"):
        with pytest.raises(FolderInUseError, match=f"evaluation \\(PID {os.getpid()} "):
            RunLock(folder, "evaluation").acquire()
    with RunLock(folder, "training"):  # released at the end of the block
        pass
