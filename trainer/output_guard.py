"""Output that survives the launcher reading it.

Accelerate's launcher (from 1.16) reads a single trainer's stderr through a pipe and copies it on. When the
launcher is killed outright (SIGKILL), nobody reads that pipe any more, and the next progress-bar update raises
``BrokenPipeError`` inside the training step: the trainer would die before it could save its state. While a
:class:`StopFlag` is installed under the project's launcher, ``sys.stdout`` and ``sys.stderr`` are wrapped in
:class:`SurvivingStream`: the first write to a pipe without a reader points the stream's file descriptor at
``/dev/null`` (later writes, Python's or a library's, go nowhere instead of failing) and reports it, which the
stop flag takes as the launcher being gone.
"""

from __future__ import annotations

import os
from typing import Callable, TextIO


class SurvivingStream:
    """``stream`` whose writes and flushes never raise ``BrokenPipeError``; ``on_broken()`` is called once, when
    its reader is found gone. Everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO, on_broken: Callable[[], None]):
        self.stream = stream
        self._on_broken = on_broken
        self._diverted = False

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self._divert()
            return self.stream.write(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._divert()
            self.stream.flush()

    def _divert(self) -> None:
        """Point the stream's descriptor at /dev/null (what is buffered then goes there too)."""
        if self._diverted:
            raise BrokenPipeError("output diverted to /dev/null and still failing")
        self._diverted = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self.stream.fileno())
        finally:
            os.close(devnull)
        self._on_broken()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)
