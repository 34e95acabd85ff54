"""A full disk as one line: what was being written, how much it needed and how much is free.

Writers fail on a full disk in several ways: ``OSError(ENOSPC)`` from Python's own I/O, safetensors'
``SafetensorError ... No space left on device``, torch's ``unexpected pos`` from its zip writer. :func:`disk_full_guard`
turns each of them into :class:`DiskFullError` naming the target, the space needed and the space free; put it
outside the writer's cleanup (staging folders, temporary files), so that what is free is measured after it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from handseg.runtime.errors import HandSegError

_MESSAGES = ("no space left on device", "disk quota exceeded", "unexpected pos")


class DiskFullError(HandSegError):
    """A write failed because the disk (or the quota) is full; the message names the target and the sizes."""

    def __init__(self, target: str | os.PathLike, what: str, needed: int, free: int | None, note: str = ""):
        self.target, self.what, self.needed, self.free = Path(target), what, needed, free
        free_text = f"{format_bytes(free)} free" if free is not None else "free space unknown"
        super().__init__(f"{target}: disk full while writing {what} (needs about {format_bytes(needed)}, "
                         f"{free_text}){note}")

    def with_note(self, note: str) -> "DiskFullError":
        """The same error with ``note`` appended (e.g. which saved state is still good) and the free space measured
        again (the writer has removed its staging meanwhile)."""
        return DiskFullError(self.target, self.what, self.needed, free_bytes(self.target), note)


def format_bytes(n: int) -> str:
    """``123 B``, ``4.5 KiB``, ``12.3 MiB``, ``1.2 GiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or the quota is full (an errno, or the text other writers use)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, Exception) and any(m in str(exc).lower() for m in _MESSAGES)


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (0 when missing): the size of a folder's previous version is the best
    estimate of what its next one needs."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing ancestor); None when unknown."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


@contextlib.contextmanager
def disk_full_guard(target: str | os.PathLike, what: str, needed: int) -> Iterator[None]:
    """Run a write of about ``needed`` bytes to ``target``; a full disk becomes :class:`DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(target, what, needed, free_bytes(target)) from None
