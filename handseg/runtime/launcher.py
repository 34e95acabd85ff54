"""``accelerate launch`` as the launch scripts need it: signals reach the launched processes, and their exit code
(and nothing else) is the launch's exit code.

    python -m handseg.runtime.launcher [--quiet] [accelerate launch options] -m trainer.train --cfg-path ...

It runs Accelerate's own launcher in this process and adds two things to it. SIGTERM, SIGINT and SIGHUP sent to
this process (``docker stop``, a scheduler, ``kill``) are passed on to every process it started, and it waits
for them as long as they take: the trainer saves its state and exits 130. Accelerate's own launcher would not
wait: before 1.16 it died at once and left the trainer running unsupervised; from 1.16 it terminates the whole
process tree (loader workers included) and kills whatever still runs 5 s later, which can be a trainer in the
middle of saving a large state. Accelerate's launcher therefore runs in a worker thread: Python lets only the main
thread install signal handlers, so neither Accelerate nor torchrun (which says so in a warning) replaces this
process's. And
an error of a launched process (the trainer's or evaluator's one-line ``error:``, exit 2) ends the launch with
the same exit code, without Accelerate's ``CalledProcessError`` traceback after the line. The launched processes
find this process's PID in ``HANDSEG_LAUNCHER_PID``: a trainer whose launcher is gone (killed with SIGKILL, which
cannot be passed on) saves its state and stops rather than run on unsupervised (:class:`trainer.stop_flag.StopFlag`).
A launched process killed with SIGKILL (exit 137), which on a training machine is nearly always the kernel's
out-of-memory killer, gets one line saying so. :func:`exec_launch` is how the launch scripts' Python side
(``trainer.launch``, ``evaluator.launch``) becomes this launcher, in the same process.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import NoReturn, Sequence

import psutil

FORWARDED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name))
LAUNCHER_ENV = "HANDSEG_LAUNCHER_PID"
KILLED = 128 + signal.SIGKILL  # 137
KILLED_LINE = ("error: a launched process was killed with SIGKILL (exit 137), most likely by the kernel's "
               "out-of-memory killer (see `dmesg`): use a smaller batch, e.g. --set data.batch_size=2 "
               "(training) or --set batch_size_eval=1 (evaluation), or fewer loader workers (data.num_workers)")


def forward_to_children(signum: int, frame) -> None:
    """Pass ``signum`` on to the processes this one started (not to theirs: a trainer's loader workers are its own
    to end); keep waiting for them."""
    for child in psutil.Process().children():
        try:
            child.send_signal(signum)
        except psutil.Error:
            pass  # ended meanwhile


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it: ``-N`` (killed by signal N) is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def failure_code(exc: BaseException) -> int | None:
    """The exit code a launch failure stands for (None: not a failure of a launched process)."""
    if isinstance(exc, subprocess.CalledProcessError):
        return exit_code(exc.returncode)
    failures = getattr(exc, "failures", None)  # torchrun's ChildFailedError: {rank: ProcessFailure}
    if isinstance(failures, dict) and failures:
        codes = [exit_code(failures[rank].exitcode) for rank in sorted(failures)]
        return KILLED if KILLED in codes else codes[0]  # one rank OOM-killed, the others stopped by torchrun
    sigval = getattr(exc, "sigval", None)  # torchrun's SignalException: it stopped its workers on this signal
    if sigval is not None:
        return 128 + int(sigval)
    return None


def main(argv: list[str] | None = None) -> int:
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv)
    if args.quiet:  # --quiet: no launcher warnings; its other effect (sys.exit(1) for any failure) is not wanted
        logging.getLogger("accelerate.commands.launch").setLevel(logging.ERROR)
    args.quiet = False  # a failed child raises CalledProcessError, which carries its exit code
    os.environ[LAUNCHER_ENV] = str(os.getpid())
    for sig in FORWARDED:
        signal.signal(sig, forward_to_children)
    outcome: list[BaseException | None] = []

    def launch() -> None:
        try:
            launch_command(args)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: handed to the main thread below
            outcome.append(exc)

    thread = threading.Thread(target=launch, name="accelerate-launch", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)  # the main thread stays free to run the signal handlers
    exc = outcome[0] if outcome else None
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    code = failure_code(exc)
    if code is None:
        raise exc
    if code == KILLED:
        print(KILLED_LINE, file=sys.stderr, flush=True)
    return code


def exec_launch(acc_config: str | Path, module: str, module_args: Sequence[str],
                launch_args: Sequence[str] = ()) -> NoReturn:
    """Replace this process by the launcher running ``python -m module module_args`` under ``accelerate launch``
    with the Accelerate config ``acc_config`` (and extra launch options ``launch_args``); the command is printed
    first. The process keeps its PID, so a signal to what the launch script started reaches the launcher."""
    shown = ["accelerate", "launch", "--config_file", str(acc_config), *launch_args, "-m", module, *module_args]
    print(shlex.join(shown), flush=True)
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "handseg.runtime.launcher", "--quiet", "--config_file",
                              str(acc_config), *launch_args, "-m", module, *module_args])


if __name__ == "__main__":
    sys.exit(main())
