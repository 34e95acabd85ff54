"""Atomic file and folder writes: write under a temporary name beside the target, then rename it into place.

One writer for a file (:func:`atomic_write_bytes` / :func:`atomic_write_text`, or :func:`atomic_path` for a
writer that needs a file name, such as a compiler) and one for a folder (:func:`atomic_folder`, or
:class:`StagedFolder` where several processes write into one staging folder). Each runs the whole sequence: a
previous save that died between its two renames is recovered, staging left by dead writers is removed, the new
version is written under a temporary name, flushed to disk (fsync), renamed into place, and the staging is removed
on any failure. A crash or Ctrl-C mid-write leaves either the previous version or nothing, never a truncated one.
Temporary names are unique per write and carry the writer's PID (``.<name>.<pid>.<random>.tmp``), so two writers
never share or delete each other's staging, and a leftover of a process that no longer runs is recognised and
removed (:func:`remove_stale_staging`). A full disk is :class:`handseg.runtime.disk.DiskFullError`, with the
staging removed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import psutil

from handseg.runtime.disk import disk_full_guard, folder_bytes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with disk_full_guard(path, path.name, len(data)):  # outside the cleanup: free space is measured after it
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600; give the file the usual permissions
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a file name (a compiler, a saver);
    on success it is renamed to ``path``, on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(Path(tmp))
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def staging_dir(target: str | os.PathLike) -> Path:
    """A new empty folder beside the folder ``target`` to write its next version in (``.<name>.<pid>.<random>.tmp``),
    unique per call; put it in place with :func:`swap_in`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    os.chmod(folder, _DIR_MODE)  # mkdtemp creates 0700; the folder it becomes gets the usual permissions
    return folder


def swap_in(staging: Path, target: str | os.PathLike) -> Path:
    """Replace the folder ``target`` by ``staging``: the old version steps aside (``.<...>.old``), the new one takes
    its name, the old one goes. A crash between the two renames leaves the old version beside the target, where
    :func:`recover_folder` finds it."""
    target = Path(target)
    old = staging.with_suffix(".old")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def recover_folder(target: str | os.PathLike) -> bool:
    """Put back the previous version of the folder ``target`` when a :func:`swap_in` died between its renames
    (no ``target``, a set-aside old version beside it). Returns whether ``target`` exists now."""
    target = Path(target)
    if not target.exists():
        olds = sorted(_staging_folders(target, ".old"), key=lambda p: p.stat().st_mtime_ns)
        if olds:
            os.replace(olds[-1], target)
    return target.exists()


def remove_stale_staging(target: str | os.PathLike) -> None:
    """Remove staging folders of ``target`` whose writer no longer runs (killed mid-save); call
    :func:`recover_folder` first, so that a set-aside old version is put back rather than removed. Staging of a
    live process (another writer) is left alone."""
    target = Path(target)
    for path in [*_staging_folders(target, ".tmp"), *_staging_folders(target, ".old")]:
        pid = _writer_pid(path, target.name)
        if pid is None or not psutil.pid_exists(pid):
            shutil.rmtree(path, ignore_errors=True)


def _staging_folders(target: Path, suffix: str) -> list[Path]:
    if not target.parent.is_dir():
        return []
    return [p for p in target.parent.glob(f".{glob.escape(target.name)}.*") if p.name.endswith(suffix) and p.is_dir()]


def _writer_pid(path: Path, name: str) -> int | None:
    """The PID in ``.<name>.<pid>.<random>.tmp|old``; None for a name without one (an older version's fixed name)."""
    match = re.fullmatch(rf"\.{re.escape(name)}\.(\d+)\..+\.(tmp|old)", path.name)
    return int(match.group(1)) if match else None



def _fsync(path: Path) -> None:
    """Flush a file's (or a folder entry's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, then the folders themselves, so that the renamed version is complete on
    disk even after a power cut."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        _fsync(path)
    _fsync(folder)


class StagedFolder:
    """The next version of the folder ``target``, written in a staging folder beside it and swapped in.

    ``begin()`` recovers a previous save that died mid-swap, removes staging left by dead writers and returns a new
    empty staging folder; the caller writes there (one process or several); ``commit()`` flushes it to disk and
    swaps it in; ``discard()`` removes whatever is left of it (a no-op after a commit). :func:`atomic_folder` runs
    this sequence for a single writer."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.staging: Path | None = None

    def begin(self) -> Path:
        recover_folder(self.target)  # an earlier save died between its two renames
        remove_stale_staging(self.target)
        self.staging = staging_dir(self.target)
        return self.staging

    def commit(self) -> Path:
        fsync_tree(self.staging)
        return swap_in(self.staging, self.target)

    def discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, what: str = "a folder", payload_bytes: int = 0) -> Iterator[Path]:
    """Write a new version of the folder ``target``: yields an empty staging folder; when the block ends without an
    error, the staging folder replaces ``target`` (the previous version is kept on any failure). A full disk is
    :class:`~handseg.runtime.disk.DiskFullError` naming ``what`` and about ``payload_bytes`` (or the previous
    version's size, if larger) as needed, measured after the staging was removed."""
    staged = StagedFolder(target)
    tmp = staged.begin()
    needed = max(int(payload_bytes), folder_bytes(target))
    with disk_full_guard(target, what, needed):  # outside the cleanup: free space is measured after it
        try:
            yield tmp
            staged.commit()
        finally:
            staged.discard()
