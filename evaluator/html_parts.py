"""Pieces of a self-contained HTML page (``report.html`` and its sections): escaping, embedded PNG images,
figures and notes."""

from __future__ import annotations

import base64
import html
import struct
from typing import Any


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's header, or None when ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def img_tag(data: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG ``data`` embedded as a data URI and its intrinsic size (no layout shift)."""
    size = png_size(data)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{uri}" alt="{esc(alt)}"{dims}>'


def figure(data: bytes, alt: str, caption: str) -> str:
    """A ``<figure>`` of the PNG ``data`` with its caption (HTML)."""
    return f"<figure>{img_tag(data, alt)}<figcaption>{caption}</figcaption></figure>"


def note(text: str) -> str:
    """A one-line note (HTML), e.g. why a part of the page is left out."""
    return f'<p class="note">{text}</p>'
