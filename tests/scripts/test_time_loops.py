"""scripts/time_loops.py: phases of make test and steps of make demo read from their output, whatever the steps are;
a failing make target ends the timing with its exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.commands import load_script

loops = load_script("time_loops")

DEMO = """
==> [0:00] 1/12 phantom data set (40 train IDs, 10 test IDs, 2048x2048) in data/phantom
writing ...
==> [0:42] 2/12 data set summary and folds
==> [0:50] 3/12 a step another change added
==> [9:00] 12/12 predictions for new X-rays

Demo finished in 9:13 (min:s, after the install). Results:
"""


def lines(text: str, step: float = 1.0) -> list[tuple[float, str]]:
    return [(i * step, line) for i, line in enumerate(text.splitlines())]


def test_demo_steps_are_read_from_demo_sh_output_whatever_they_are():
    run = loops.Run("demo", 0, 600.0, lines(DEMO))
    rows = loops.demo_rows(run)
    assert [(r.step, r.seconds) for r in rows] == [
        ("1/12 phantom data set (40 train IDs, 10 test IDs, 2048x2048) in data/phantom", 42),
        ("2/12 data set summary and folds", 8), ("3/12 a step another change added", 490),
        ("12/12 predictions for new X-rays", 13), ("in all, after the install", 553)]


def test_a_demo_cut_short_has_no_total_and_no_open_step():
    rows = loops.demo_rows(loops.Run("demo", 2, 60.0, lines(DEMO.split("==> [9:00]")[0])))
    assert [r.step for r in rows] == ["1/12 phantom data set (40 train IDs, 10 test IDs, 2048x2048) in data/phantom",
                                      "2/12 data set summary and folds"]


def test_test_phases_and_the_pytest_summary():
    out = ["==> lint", ".venv/bin/python -m ruff check .", "All checks passed!", "==> tests", "...",
           "===== slowest 15 durations =====", "819 passed, 1 skipped in 251.20s (0:04:11)"]
    run = loops.Run("test", 0, 260.0, [(t, line) for t, line in zip([0, 0.5, 3, 4, 100, 255, 258], out)])
    rows = loops.test_rows(run)
    assert [(r.step, r.seconds) for r in rows] == [("lint", 4), ("tests (819 passed, 1 skipped)", 256),
                                                   ("in all", 260)]
    table = loops.table(rows, "header")
    assert table.splitlines()[2:] == ["| loop | step | m:ss |", "| --- | --- | --- |", "| `make test` | lint | 0:04 |",
                                      "| `make test` | tests (819 passed, 1 skipped) | 4:16 |",
                                      "| `make test` | **in all** | **4:20** |"]


@pytest.mark.parametrize("code", [0, 1, 5])  # 1: tests failed, 5: no tests collected
def test_make_targets_are_timed_and_a_failure_stops_with_its_exit_code(tmp_path: Path, code: int, capsys):
    (tmp_path / "Makefile").write_text(
        "install:\n\t@echo installed\n"
        f"test:\n\t@echo '==> lint'\n\t@echo '==> tests'\n\t@echo '3 passed in 0.01s'\n\t@exit {code}\n"
        "demo:\n\t@echo '==> [0:00] 1/1 only step'\n\t@echo 'Demo finished in 0:02'\n")
    rows, returncode = loops.timed_targets(tmp_path, ["install", "test", "demo"], tmp_path / "logs")
    assert returncode == code
    steps = [r.step for r in rows]
    assert steps[:4] == ["a new .venv with every requirement", "lint", "tests (3 passed)", "in all"]
    assert steps[4:] == ([] if code else ["1/1 only step", "in all, after the install"])
    assert (tmp_path / "logs" / "make_test.log").read_text().startswith("==> lint")
    if code:  # make itself exits 2; the table says what pytest said
        meaning = {1: "tests failed", 5: "no tests collected"}[code]
        assert f"make test failed (exit {code}: {meaning})" in capsys.readouterr().err
