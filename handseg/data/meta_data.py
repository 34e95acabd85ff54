"""The optional per-person table ``meta_data.csv`` / ``meta_data.xlsx``, read into one vocabulary.

The competition's file names its columns in Korean, with a synonym in brackets (``ID, 나이, 성별, 체중(몸무게),
키(신장)``), and writes sex as ``남`` / ``여``; other copies say ``Age``, ``Sex``, ``Weight (kg)``,
``height [cm]`` and ``M`` / ``F``. :func:`read_meta` maps every known header, English or Korean, in any case and
spacing, with or without a bracketed unit or synonym, to ``age``, ``sex``, ``weight`` or ``height``; it reads
the sex values ``남`` / ``여``, ``M`` / ``F`` and their variants (``male``, ``여자``, ...) as ``M`` / ``F``, and keeps
an unknown header, and an unknown sex value, as written. What was mapped is recorded on the table
(:func:`meta_mapping`) and printed by ``scripts/dataset_summary.py``, so a surprise is visible.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path

import numpy as np

from handseg.runtime.errors import DataFormatError

META_NAMES = ("meta_data.csv", "meta_data.xlsx")
CSV_ENCODINGS = ("utf-8-sig", "cp949")  # Korean spreadsheets export CSV as UTF-8 (with BOM) or CP949

# Header words (compared after folding case and removing spaces, "_", "-", "." and bracketed parts).
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "age": ("age", "나이", "연령", "만나이"),
    "sex": ("sex", "gender", "성별"),
    "weight": ("weight", "bodyweight", "wt", "체중", "몸무게"),
    "height": ("height", "bodyheight", "stature", "ht", "키", "신장"),
}
SEX_ALIASES: dict[str, tuple[str, ...]] = {
    "M": ("m", "male", "man", "boy", "남", "남자", "남성", "남아"),
    "F": ("f", "female", "woman", "girl", "여", "여자", "여성", "여아"),
}
_BRACKETS = re.compile(r"[(\[{]([^)\]}]*)[)\]}]")
_SEPARATORS = re.compile(r"[\s_\-.]+")
_HEADER_LOOKUP = {alias: name for name, aliases in HEADER_ALIASES.items() for alias in aliases}
_SEX_LOOKUP = {alias: code for code, aliases in SEX_ALIASES.items() for alias in aliases}


def _fold(text: str) -> str:
    """NFKC (full-width brackets, decomposed Hangul), case folded, separators removed."""
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", text)).casefold()


def canonical_header(header: object) -> str | None:
    """``age`` / ``sex`` / ``weight`` / ``height`` for a known header, else None.

    ``" 체중(몸무게)"``, ``"Weight (kg)"``, ``"HEIGHT[cm]"`` and ``"키 (신장)"`` are known: the words outside
    brackets are looked up first, then each bracketed part (a synonym such as ``(몸무게)``; a unit never matches).
    """
    text = unicodedata.normalize("NFKC", str(header))
    inside = _BRACKETS.findall(text)
    for candidate in (_BRACKETS.sub(" ", text), *inside):
        name = _HEADER_LOOKUP.get(_fold(candidate))
        if name is not None:
            return name
    return None


def canonical_sex(value: object) -> object:
    """``M`` / ``F`` for a known sex value (``남``, ``여``, ``m``, ``Female``, ``여자`` ...); others as given."""
    if not isinstance(value, str):
        return value
    return _SEX_LOOKUP.get(_fold(value), value.strip())


def meta_column(meta, column: str) -> str:
    """The table's column for a name given by a user (``sex``, ``Sex``, ``성별`` all find ``sex``).

    Raises ValueError listing the columns when there is none.
    """
    if column in meta.columns:
        return column
    name = canonical_header(column)
    if name is not None and name in meta.columns:
        return name
    raise ValueError(f"stratify column {column!r} not in meta data (columns: {', '.join(map(str, meta.columns))})")


def _normalise_id(value: object) -> str:
    """Meta IDs as folder names: 7, 7.0 or "7" -> "ID007"; "ID007" stays."""
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
        return f"ID{int(value):03d}"
    text = str(value).strip()
    return f"ID{int(text):03d}" if text.isdigit() else text


def _read_table(path: Path):
    """The raw table: CSV (UTF-8, else CP949) or Excel; DataFormatError naming the file when unreadable."""
    import pandas as pd

    try:
        if path.suffix != ".csv":
            return pd.read_excel(path)
        for encoding in CSV_ENCODINGS:
            try:
                return pd.read_csv(path, encoding=encoding)
            except UnicodeDecodeError:
                continue
        raise ValueError(f"not text in {' or '.join(CSV_ENCODINGS)}")
    except Exception as exc:  # pandas raises many types for malformed files
        first_line = str(exc).splitlines()[0][:80] if str(exc) else ""
        raise DataFormatError(path, f"cannot read table ({type(exc).__name__}: {first_line})") from None


def _known_headers(df, path: Path) -> dict[str, str]:
    """{original: canonical} for the known headers of ``df``; DataFormatError when two mean the same."""
    renamed: dict[str, str] = {}
    taken: dict[str, str] = {}
    for original in df.columns:
        name = canonical_header(original)
        if name is None:
            continue
        if name in taken:
            raise DataFormatError(path, f"columns {taken[name]!r} and {original!r} both mean {name}")
        taken[name] = str(original)
        renamed[str(original)] = name
    return renamed


def read_meta(root: str | os.PathLike):
    """``meta_data.csv`` or ``meta_data.xlsx`` under ``root`` as a pandas DataFrame indexed by folder ID, or None.

    The ID column (any case) may hold ``ID001`` or plain numbers (1 -> ``ID001``). Known headers are renamed to
    ``age``, ``sex``, ``weight``, ``height`` and sex values read as ``M`` / ``F`` (module docstring); other columns
    are kept as read. ``meta.attrs`` records the file and the mapping (see :func:`meta_mapping`). A malformed
    file, a repeated ID, or two columns meaning the same raise DataFormatError naming the file.
    """
    import pandas as pd

    root = Path(root)
    for name in META_NAMES:
        path = root / name
        if not path.is_file():
            continue
        df = _read_table(path)
        id_cols = [c for c in df.columns if _fold(str(c)) == "id"]
        if not id_cols:
            raise DataFormatError(path, f"no ID column (columns: {', '.join(map(str, df.columns))})")
        df = df.dropna(subset=[id_cols[0]])
        df.index = pd.Index([_normalise_id(v) for v in df[id_cols[0]]], name="ID")
        df = df.drop(columns=id_cols[0])
        if df.index.has_duplicates:
            dup = df.index[df.index.duplicated()].unique().tolist()
            raise DataFormatError(path, f"ID repeats: {', '.join(dup[:3])}")
        renamed = _known_headers(df, path)
        df = df.rename(columns=renamed)
        sex_values: dict[str, str] = {}
        if "sex" in df.columns:
            originals = df["sex"]
            df["sex"] = originals.map(canonical_sex)
            sex_values = {str(a).strip(): str(b) for a, b in zip(originals, df["sex"]) if isinstance(a, str)}
        df.attrs.update(path=str(path), columns=renamed, sex_values=dict(sorted(sex_values.items())))
        return df
    return None


def meta_mapping(meta) -> list[str]:
    """Printable lines: which headers were mapped to which name, and how the sex values were read."""
    columns = meta.attrs.get("columns", {})
    kept = [str(c) for c in meta.columns if str(c) not in columns.values()]
    lines = ["columns: " + ", ".join(
        [f"{orig} -> {name}" if orig != name else name for orig, name in columns.items()]
        + [f"{c} (kept as is)" for c in kept])]
    if "sex" in meta.columns:
        counts = meta["sex"].value_counts(dropna=False)
        values = meta.attrs.get("sex_values", {})
        read = ", ".join(f"{orig} -> {code}" if orig != code else orig for orig, code in values.items())
        counted = ", ".join(f"{code}: {n}" for code, n in sorted((str(k), int(v)) for k, v in counts.items()))
        lines.append(f"sex values: {read or 'none'} ({counted})")
    return lines
