"""Markdown tables, the one way the project writes them (reports, model cards, benchmarks print them)."""

from __future__ import annotations

from typing import Sequence


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub markdown table. ``align``: one character per column, ``l`` (left), ``r`` (right) or ``c``
    (centre); default all left. Cells are written with ``str``; a ``|`` inside a cell is escaped."""
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - set("lrc"):
        raise ValueError(f"align needs one of l, r, c per column ({len(header)}), got {align!r}")
    rule = {"l": "---", "r": "---:", "c": ":---:"}

    def line(cells: Sequence[object]) -> str:
        if len(cells) != len(header):
            raise ValueError(f"a row has {len(cells)} cells, the header {len(header)}")
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "| " + " | ".join(rule[a] for a in align) + " |", *map(line, rows)])
