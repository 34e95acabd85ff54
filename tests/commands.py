"""The project's commands run in the test process: ``main(argv)`` of a script or module, with what a subprocess
would have given back (exit code, stdout, stderr) and none of its cost (a new Python importing torch: seconds each).

Use a subprocess only where the process itself is what is tested: an exit code through ``accelerate_*.sh`` and the
launcher, a signal, a killed process, which modules a fresh process imports.

    from tests.commands import load_script, run_main

    summary = load_script("dataset_summary")          # scripts/dataset_summary.py as a module
    proc = run_main(summary.main, "--data", root)     # subprocess.CompletedProcess: returncode, stdout, stderr
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
_SCRIPTS = REPO_ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` (or a top-level command such as ``tensorrt_aot``) imported as a module, once per process.
    The scripts folder is put on ``sys.path`` as running the script would, for the scripts that import each other."""
    if name in sys.modules:
        return sys.modules[name]
    path = _SCRIPTS / f"{name}.py"
    if not path.is_file():
        path = REPO_ROOT / f"{name}.py"
    if str(_SCRIPTS) not in sys.path:
        sys.path.append(str(_SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _interpreter_warnings(stderr: io.StringIO):
    """Warnings as a fresh interpreter shows them (its default filters, printed on stderr), not as pytest records
    them, so that a command's "one line on stderr" is checked as strictly as in a subprocess."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)

        def show(message, category, filename, lineno, file=None, line=None):
            stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield


@contextlib.contextmanager
def _working_dir(cwd: Path | str | None):
    before = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


def run_main(main: Callable, *args, cwd: Path | str | None = None) -> subprocess.CompletedProcess:
    """Call ``main([str(a) for a in args])`` as ``python script.py args`` would run it, in ``cwd`` (default: the
    repository root, where the commands are run from). The exit code is that of ``sys.exit`` (a
    :func:`handseg.runtime.errors.cli_main` error: 2), else ``main``'s integer result, else 0. Any other exception
    propagates: in a subprocess it would have been a traceback, which the tests refuse."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with _working_dir(REPO_ROOT if cwd is None else cwd), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err), _interpreter_warnings(err):
        try:
            result = main(argv)
            code = result if isinstance(result, int) and not isinstance(result, bool) else 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:  # sys.exit("message"): printed on stderr, exit 1
                print(exc.code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess([getattr(main, "__module__", "main"), *argv], code, out.getvalue(),
                                       err.getvalue())
