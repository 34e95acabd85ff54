"""The parser every command starts from: ``--help`` shows what the command does and its example, as the README
shows it."""

from __future__ import annotations

import argparse
import textwrap


def usage_block(doc: str) -> str | None:
    """The first indented block of a command's docstring ``doc`` (its example command lines), dedented; None when
    it has none."""
    for paragraph in doc.split("\n\n"):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if lines and all(line.startswith("    ") for line in lines):
            return textwrap.dedent("\n".join(lines))
    return None


def command_parser(doc: str, **kwargs) -> argparse.ArgumentParser:
    """An argument parser whose description is the first paragraph of the command's docstring ``doc`` and whose
    epilog is its example (:func:`usage_block`), kept as written; ``kwargs`` go to ``ArgumentParser``."""
    example = usage_block(doc)
    return argparse.ArgumentParser(
        description=" ".join(doc.strip().split("\n\n")[0].split()),
        epilog=f"example:\n{textwrap.indent(example, '  ')}" if example else None,
        formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_workers_argument(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--workers N`` (an integer >= 1; 0 or less is a one-line usage error): the processes that ``what``."""
    parser.add_argument("--workers", type=_at_least_one, default=default, help=f"processes that {what}")
