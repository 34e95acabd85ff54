"""Errors that reach the user as one line, and the wrapper that turns them into a clean exit.

Every reader raises :class:`DataFormatError` naming the offending file; every config loader raises
:class:`ConfigError` naming the file and the key. Command-line entry points wrap their ``main`` in
:func:`cli_main`, which prints ``error: <message>`` on stderr and exits non-zero instead of a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable, TypeVar


class HandSegError(Exception):
    """Base class for errors that are the user's to fix; the message is one line."""


class DataFormatError(HandSegError):
    """A data file (PNG, JSON, CSV) is missing or malformed."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(HandSegError):
    """A YAML config has an unknown key, a wrong type, a bad value or a missing path."""

    def __init__(self, file: str | os.PathLike, key: str, problem: str):
        self.file = Path(file)
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}")


F = TypeVar("F", bound=Callable[..., object])


def cli_main(fn: F) -> F:
    """Decorate a command's ``main``: HandSegError -> ``error: ...`` on stderr and exit 2; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HandSegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
