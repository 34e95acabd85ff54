"""Atomic writes: the target is replaced only when the writer finishes; a failed write leaves it untouched."""

from __future__ import annotations

import os

import pytest

from handseg.runtime.atomic import atomic_path, atomic_write_text


def test_atomic_write_text_replaces_and_keeps_usual_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "engine.pt2"
    with atomic_path(target, suffix=".pt2") as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".pt2") as tmp:
            tmp.write_bytes(b"half-written")
            raise RuntimeError("compiler crashed")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["engine.pt2"]
