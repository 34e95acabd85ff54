"""One run at a time per output folder: an exclusive lock held while a run writes the folder.

Two trainings (or two evaluations) writing one folder would delete each other's staging and mix their logs,
reports and states. The lock is an OS-level lock on ``<folder>/.lock`` (:mod:`filelock`), so the system releases
it when its process ends, also after ``kill -9``: a stale lock never blocks. Who holds it is recorded beside it in
``<folder>/.lock.owner`` (JSON: pid, host, what, since) for the message a second run gets:

    error: runs/x: in use by another training (PID 4242 on host1, since 2025-01-01T10:00:00); wait for it to
    end or choose another output_dir
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import HandSegError

LOCK_FILE = ".lock"
OWNER_FILE = ".lock.owner"


class FolderInUseError(HandSegError):
    """Another live process holds the folder's lock."""


class RunLock:
    """The lock of one run folder; ``what`` (``training``, ``evaluation``) is recorded for other runs' messages."""

    def __init__(self, folder: str | os.PathLike, what: str):
        self.folder = Path(folder)
        self.what = what
        self._lock: FileLock | None = None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting; FolderInUseError naming the folder and the holder's PID when taken."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder / LOCK_FILE), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise FolderInUseError(f"{self.folder}: in use by {self._holder()}; wait for it to end or choose "
                                   "another output_dir") from None
        self._lock = lock
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                 "since": dt.datetime.now().isoformat(timespec="seconds")}
        atomic_write_text(self.folder / OWNER_FILE, json.dumps(owner) + "\n")
        return self

    def release(self) -> None:
        """Give the lock back (the owner record goes first, so it never describes the next holder wrongly)."""
        if self._lock is None:
            return
        (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    def _holder(self) -> str:
        try:
            owner = json.loads((self.folder / OWNER_FILE).read_text())
            return f"another {owner['what']} (PID {owner['pid']} on {owner['host']}, since {owner['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another run (PID unknown: it is just starting or ending)"

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike, what: str, accelerator=None, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder``'s lock for the block. Under Accelerate only the main process takes it (it writes the shared
    files), and a refusal reaches every process, so all of them stop with the same one-line error."""
    is_main = accelerator is None or accelerator.is_main_process
    lock = RunLock(folder, what) if enabled and is_main else None
    problem = [None]
    if lock is not None:
        try:
            lock.acquire()
        except FolderInUseError as exc:
            problem = [str(exc)]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(problem, from_process=0)
    if problem[0] is not None:
        raise FolderInUseError(problem[0])
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
