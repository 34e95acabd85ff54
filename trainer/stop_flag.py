"""The stop request of a training process: SIGINT/SIGTERM, or the launcher that started it gone.

:class:`StopFlag` is installed around the epochs (``with StopFlag() as stop:``); the loop reads it at step
boundaries (:func:`trainer.loop.check_flags`), saves a resumable state and exits 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from handseg.runtime.launcher import LAUNCHER_ENV
from trainer.output_guard import SurvivingStream


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM while installed (``with StopFlag() as stop:``), or when the launcher that started this
    process (:mod:`handseg.runtime.launcher`, whose PID is in ``HANDSEG_LAUNCHER_PID``) is gone; the loop saves a
    resumable state at the next step boundary and exits. Signals within ``repeat_window`` seconds of the first
    count once (a terminal, a launcher and a scheduler may each deliver one); a later one gives up on the graceful
    path. A process started otherwise (``python -m trainer.train``, also under ``nohup``) does not watch its
    parent."""

    signum: int | None = None
    repeat_window: float = 2.0
    previous: dict = field(default_factory=dict)
    _first_at: float = 0.0
    _done: threading.Event = field(default_factory=threading.Event)
    streams: tuple = ()

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        self._done.clear()
        if os.environ.get(LAUNCHER_ENV) == str(os.getppid()):
            threading.Thread(target=self._watch_launcher, args=(os.getppid(),), daemon=True).start()
            # A launcher that reads this process's output through a pipe may die first (trainer.output_guard).
            self.streams = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = (SurvivingStream(s, self._launcher_gone) for s in self.streams)
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()
        if self.streams:
            sys.stdout, sys.stderr = self.streams
            self.streams = ()

    def _launcher_gone(self) -> None:
        if self.signum is None:
            self.signum, self._first_at = signal.SIGTERM, time.monotonic()

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
        elif time.monotonic() - self._first_at > self.repeat_window:
            raise KeyboardInterrupt

    def _watch_launcher(self, parent: int) -> None:
        """A launcher killed without passing a signal on leaves this process to another parent: stop then."""
        while not self._done.wait(1.0):
            if os.getppid() != parent:
                self._launcher_gone()
                return
