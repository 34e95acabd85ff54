"""Size and sha256 records of files: how checkpoints, training states and cache entries notice damage."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | os.PathLike, checksum: bool = True) -> dict:
    """``{"bytes": size}`` of a file, with ``"sha256"`` when ``checksum``."""
    record: dict = {"bytes": Path(path).stat().st_size}
    if checksum:
        record["sha256"] = file_sha256(path)
    return record
