"""Atomic writes: the target is replaced only when the writer finishes; a failed write leaves it untouched."""

from __future__ import annotations

import os

import pytest

from handseg.runtime.atomic import StagedFolder, atomic_folder, atomic_path, atomic_write_text


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


def _leftovers(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_atomic_folder_replaces_the_previous_version_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "best"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("crash mid-save")
    assert (target / "a.txt").read_text() == "one" and _leftovers(target) == []
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"] and _leftovers(target) == []


def test_atomic_folder_recovers_a_swap_that_died_and_removes_dead_writers_staging(tmp_path):
    target = tmp_path / "state"
    with atomic_folder(target) as tmp:
        (tmp / "x").write_text("good")
    # A save that died between its two renames left the old version set aside and no target; another, killed
    # while writing, left its staging under a PID that no longer runs.
    old = tmp_path / ".state.999999999.abc.old"
    target.rename(old)
    dead = tmp_path / ".state.999999999.def.tmp"
    dead.mkdir()
    staged = StagedFolder(target)
    staging = staged.begin()
    assert (target / "x").read_text() == "good" and not old.exists() and not dead.exists()
    (staging / "x").write_text("new")
    staged.commit()
    staged.discard()
    assert (target / "x").read_text() == "new" and _leftovers(target) == []


def test_atomic_folder_flushes_every_file_before_the_swap(tmp_path, monkeypatch):
    import handseg.runtime.atomic as atomic

    flushed = []
    real = atomic._fsync
    monkeypatch.setattr(atomic, "_fsync", lambda p: (flushed.append(p.name), real(p)))
    with atomic_folder(tmp_path / "ckpt") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"1234")
        (tmp / "c.json").write_text("{}")
    assert {"w.bin", "c.json", "sub"} <= set(flushed) and flushed[-1].startswith(".ckpt.")
