"""The competition submission CSV: ``image_name,class,rle``, one row per (image, class).

Row order: images in the order the caller gives (the sorted paths under ``test/DCM``), classes in CLASSES
order; where a ``sample_submission.csv`` is given, its row order wins, after checking it lists exactly the
same (image, class) pairs. ``image_name`` is the bare PNG file name.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path

from handseg.format.classes import CLASSES
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.errors import DataFormatError

HEADER = ("image_name", "class", "rle")


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, row) of a submission-like CSV after the header; DataFormatError naming the file."""
    if not path.is_file():
        raise DataFormatError(path, "CSV file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFormatError(path, f"cannot read as UTF-8 text ({exc})") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise DataFormatError(path, f"malformed CSV: {exc}") from None
    if not rows:
        raise DataFormatError(path, "empty CSV (no header)")
    header = [h.strip() for h in rows[0]]
    if header[:2] != list(HEADER[:2]):
        raise DataFormatError(path, f"header must start with image_name,class; got {','.join(rows[0])!r:.80}")
    body = []
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise DataFormatError(path, f"line {i}: expected at least 2 columns, got {len(row)}")
        body.append((i, row))
    return body


def check_image_names(paths: list[str | os.PathLike]) -> None:
    """Refuse images whose bare file names repeat (``ID003/image200.png`` and ``ID004/image200.png``).

    The submission's ``image_name`` is the bare file name, so the rows of two such images could not be told
    apart and one would silently stand for the other. Raises DataFormatError naming both paths of the first
    such pair (and how many names repeat), meant to run before any work starts.
    """
    first: dict[str, Path] = {}
    clashes: list[tuple[Path, Path]] = []
    for path in map(Path, paths):
        if path.name in first:
            clashes.append((first[path.name], path))
        else:
            first[path.name] = path
    if clashes:
        a, b = clashes[0]
        more = f"; {len(clashes) - 1} more repeated name(s)" if len(clashes) > 1 else ""
        raise DataFormatError(b, f"same file name as {a}: a submission names images by their bare file name, so "
                                 f"their rows could not be told apart; rename one{more}")


def _pairs_preview(pairs: list[tuple[str, str]], k: int = 3) -> str:
    return ", ".join(f"({a}, {b})" for a, b in pairs[:k]) + (", ..." if len(pairs) > k else "")


def submission_order(image_names: list[str],
                     sample_submission: str | os.PathLike | None = None) -> list[tuple[str, str]]:
    """The (image_name, class) rows of the submission, in order.

    Without ``sample_submission``: ``image_names`` in the given order, each with the 29 CLASSES in order.
    With it: that file's row order, which must cover exactly ``image_names`` x CLASSES, each pair once;
    otherwise DataFormatError naming the file with the missing / extra pairs.
    """
    if len(set(image_names)) != len(image_names):
        dup = sorted(n for n, k in Counter(image_names).items() if k > 1)
        raise ValueError(f"image names repeat: {dup[:3]}")
    expected = [(name, cls) for name in image_names for cls in CLASSES]
    if sample_submission is None:
        return expected
    path = Path(sample_submission)
    order = [(row[0], row[1]) for _, row in _read_rows(path)]
    seen: set[tuple[str, str]] = set()
    for pair in order:
        if pair in seen:
            raise DataFormatError(path, f"row ({pair[0]}, {pair[1]}) appears twice")
        seen.add(pair)
    wanted = set(expected)
    missing = [p for p in expected if p not in seen]
    extra = [p for p in order if p not in wanted]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} predicted (image, class) pair(s) missing from it: {_pairs_preview(missing)}")
        if extra:
            parts.append(f"{len(extra)} row(s) with no prediction: {_pairs_preview(extra)}")
        raise DataFormatError(path, "; ".join(parts))
    return order


def format_submission(rles: dict[str, list[str]], sample_submission: str | os.PathLike | None = None) -> str:
    """CSV text of a submission; ``rles[image_name]`` holds the 29 RLE strings in CLASSES order."""
    for name, strings in rles.items():
        if len(strings) != len(CLASSES):
            raise ValueError(f"{name}: expected {len(CLASSES)} RLE strings, got {len(strings)}")
    lookup = {(name, cls): strings[i] for name, strings in rles.items() for i, cls in enumerate(CLASSES)}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    for name, cls in submission_order(list(rles), sample_submission):
        writer.writerow((name, cls, lookup[(name, cls)]))
    return buf.getvalue()


def write_submission(
    path: str | os.PathLike,
    rles: dict[str, list[str]],
    sample_submission: str | os.PathLike | None = None,
) -> Path:
    """Write the submission CSV atomically (a failure leaves no partial file); returns the path.

    Args:
        rles: image_name -> 29 RLE strings in CLASSES order; images in the desired row order (sorted by
            path under ``test/DCM``) unless ``sample_submission`` is given.
        sample_submission: optional CSV whose row order is used (validated, see :func:`submission_order`).
    """
    return atomic_write_text(path, format_submission(rles, sample_submission))


def read_submission(path: str | os.PathLike) -> dict[tuple[str, str], str]:
    """Read a submission CSV: (image_name, class) -> RLE string, in file order.

    Raises DataFormatError for a missing file, a wrong header, a row without an rle column, an unknown
    class or a repeated (image, class) pair.
    """
    path = Path(path)
    out: dict[tuple[str, str], str] = {}
    for i, row in _read_rows(path):
        if len(row) != 3:
            raise DataFormatError(path, f"line {i}: expected 3 columns image_name,class,rle, got {len(row)}")
        name, cls, rle = row
        if cls not in CLASSES:
            raise DataFormatError(path, f"line {i}: unknown class {cls!r}")
        if (name, cls) in out:
            raise DataFormatError(path, f"line {i}: ({name}, {cls}) appears twice")
        out[(name, cls)] = rle
    return out
