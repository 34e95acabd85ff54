"""Time the two loops a newcomer runs, on a fresh clone of HEAD in a temporary folder, and print the README's table.

    python scripts/time_loops.py [--demo] [--keep] [--workdir DIR] [--log-dir DIR]

It clones the repository's HEAD (committed work only), then times ``make install``, ``make test`` by phase (lint,
tests: the ``==> lint`` / ``==> tests`` lines the Makefile prints) and, with ``--demo``, ``make demo`` step by step
(``scripts/demo.sh`` prints ``==> [m:ss] N/11 title`` when a step starts and ``Demo finished in m:ss`` at the end;
whatever the steps are, each row is one of them). The table goes to stdout, each command's output to
``<log-dir>/make_<target>.log``. A command that fails (``make test`` with failing tests, or any pytest exit code
other than 0) ends the run with its exit code, after the rows measured so far. The load average is printed with the
table: times measured on a busy machine are longer.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_PHASE = re.compile(r"^==> (\w[\w -]*)$")  # the Makefile's phase markers
DEMO_STEP = re.compile(r"^==> \[(\d+):(\d{2})\] (.+)$")  # demo.sh: elapsed m:ss, then "N/11 title"
DEMO_END = re.compile(r"^Demo finished in (\d+):(\d{2})")
PYTEST_SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s")
MAKE_ERROR = re.compile(r"^make: \*\*\* \[.*\] Error (\d+)")  # make exits 2; the failed command's own code
PYTEST_EXIT = {1: "tests failed", 2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


@dataclass
class Row:
    """One row of the table: the loop (``make test``), the step, its seconds."""

    loop: str
    step: str
    seconds: float


@dataclass
class Run:
    """One make target as it ran: exit code, seconds, and its output lines with the time each arrived."""

    target: str
    returncode: int
    seconds: float
    lines: list[tuple[float, str]] = field(default_factory=list)


def clock(seconds: float) -> str:
    """Seconds as m:ss."""
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def make(clone: Path, target: str, log_dir: Path) -> Run:
    """``make <target>`` in ``clone``, its output kept line by line with arrival times (seconds from its start)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    # a fresh shell's make: no virtualenv, and nothing of a make this runs under (make test runs the tests, whose
    # MAKELEVEL would make the inner make print its folder and name its failure make[1])
    outer = ("VIRTUAL_ENV", "PYTHONPATH", "MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")
    env = {k: v for k, v in os.environ.items() if k not in outer}
    t0 = time.monotonic()
    lines = []
    with open(log_dir / f"make_{target}.log", "w") as log:
        proc = subprocess.Popen(["make", target], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
            log.write(line)
        returncode = proc.wait()
    return Run(target, returncode, time.monotonic() - t0, lines)


def test_rows(run: Run) -> list[Row]:
    """``make test`` by phase: each ``==> phase`` line to the next (the last to the end), and in all."""
    marks = [(t, m.group(1)) for t, line in run.lines if (m := TEST_PHASE.match(line))]
    summary = next((m.group(1) for _, line in reversed(run.lines) if (m := PYTEST_SUMMARY.match(line))), None)
    rows = []
    for i, (start, phase) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else run.seconds
        label = f"{phase} ({summary})" if phase == "tests" and summary else phase
        rows.append(Row("`make test`", label, end - start))
    return rows + [Row("`make test`", "in all", run.seconds)]


def demo_rows(run: Run) -> list[Row]:
    """``make demo`` step by step, from the elapsed times demo.sh prints (its clock starts after the install)."""
    steps = [(int(m.group(1)) * 60 + int(m.group(2)), m.group(3)) for _, line in run.lines
             if (m := DEMO_STEP.match(line))]
    end = next((int(m.group(1)) * 60 + int(m.group(2)) for _, line in run.lines if (m := DEMO_END.match(line))),
               None)
    rows = []
    for i, (start, title) in enumerate(steps):
        stop = steps[i + 1][0] if i + 1 < len(steps) else end
        if stop is not None:
            rows.append(Row("`make demo`", title, stop - start))
    if end is not None:
        rows.append(Row("`make demo`", "in all, after the install", end))
    return rows


def table(rows: list[Row], header: str) -> str:
    """The markdown table of ``rows`` under a one-line ``header`` (what was measured, where)."""
    out = [header, "", "| loop | step | m:ss |", "| --- | --- | --- |"]
    for row in rows:
        bold = row.step.startswith("in all")
        step, time_ = (f"**{row.step}**", f"**{clock(row.seconds)}**") if bold else (row.step, clock(row.seconds))
        out.append(f"| {row.loop} | {step} | {time_} |")
    return "\n".join(out)


def fresh_clone(workdir: Path) -> tuple[Path, str]:
    """A clone of this repository's HEAD in ``workdir/handseg``; returns it and the commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    if dirty:
        print(f"note: uncommitted changes are not timed (the clone is HEAD, {commit})", file=sys.stderr)
    clone = workdir / "handseg"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", commit], cwd=clone, check=True)
    return clone, commit


def failure(run: Run) -> tuple[int, str]:
    """The exit code of the command that failed in ``run`` (make itself exits 2) and what it means for pytest."""
    code = next((int(m.group(1)) for _, line in reversed(run.lines) if (m := MAKE_ERROR.match(line))),
                run.returncode)
    meaning = f": {PYTEST_EXIT[code]}" if run.target == "test" and code in PYTEST_EXIT else ""
    return code, f"exit {code}{meaning}"


def timed_targets(clone: Path, targets: list[str], log_dir: Path) -> tuple[list[Row], int]:
    """Run ``targets`` in order; the rows measured and the exit code (the failed command's, else 0)."""
    rows: list[Row] = []
    for target in targets:
        print(f"make {target} ...", file=sys.stderr, flush=True)
        run = make(clone, target, log_dir)
        if target == "install":
            rows.append(Row("`make install`", "a new .venv with every requirement", run.seconds))
        else:
            rows += test_rows(run) if target == "test" else demo_rows(run)
        if run.returncode != 0:
            code, why = failure(run)
            tail = "\n".join(line for _, line in run.lines[-15:])
            print(f"error: make {target} failed ({why}) after {clock(run.seconds)}; its last lines (all of them in "
                  f"{log_dir / f'make_{target}.log'}):\n{tail}", file=sys.stderr)
            return rows, code
    return rows, 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", action="store_true", help="also time make demo, step by step (about half an hour)")
    p.add_argument("--workdir", type=Path, default=None, help="where to clone (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the clone (its .venv, data, runs and outputs)")
    p.add_argument("--log-dir", type=Path, default=None, help="where the commands' output goes (default: the workdir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="handseg_loops_"))
    log_dir = args.log_dir or workdir
    clone, commit = fresh_clone(workdir)
    load_before = os.getloadavg()[0]
    try:
        rows, code = timed_targets(clone, ["install", "test", *(["demo"] if args.demo else [])], log_dir)
    finally:
        if not args.keep:
            shutil.rmtree(clone, ignore_errors=True)
    header = (f"Fresh clone of {commit}, {datetime.now():%Y-%m-%d}, {os.cpu_count()} cores, load average "
              f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end (`python scripts/time_loops.py"
              f"{' --demo' if args.demo else ''}`):")
    print(table(rows, header))
    return code


if __name__ == "__main__":
    sys.exit(main())
