"""The phantom's per-person table, written as the project's English CSV or in the competition's own form.

``csv``: ``meta_data.csv`` with ``ID, age, sex, weight, height`` and sex ``M`` / ``F``.
``xlsx-ko``: ``meta_data.xlsx`` as the competition releases it: ``ID, 나이, 성별, 체중(몸무게), 키(신장)``, IDs as
plain numbers, sex ``남`` / ``여``. Both hold the same values, so folds stratified on either are the same
(:mod:`handseg.data.meta_data` reads both). The workbook is byte-identical for the same rows: its timestamps are
fixed.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import zipfile
from pathlib import Path

from handseg.runtime.atomic import atomic_write_bytes, atomic_write_text

META_FORMATS = ("csv", "xlsx-ko")
META_FILES = {"csv": "meta_data.csv", "xlsx-ko": "meta_data.xlsx"}
COLUMNS = ("ID", "age", "sex", "weight", "height")
KOREAN_HEADERS = {"ID": "ID", "age": "나이", "sex": "성별", "weight": "체중(몸무게)", "height": "키(신장)"}
KOREAN_SEX = {"M": "남", "F": "여"}
_EPOCH = datetime.datetime(2022, 1, 1)
_ZIP_TIME = (2022, 1, 1, 0, 0, 0)


def meta_csv_text(rows: list[dict]) -> str:
    """The English CSV: header ``ID,age,sex,weight,height``, one line per row."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _fixed_times(xlsx: bytes) -> bytes:
    """The same workbook with every zip entry dated :data:`_ZIP_TIME` and a fixed ``dcterms:modified``
    (openpyxl stamps the time of saving into both)."""
    stamp = _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ")
    src, out = zipfile.ZipFile(io.BytesIO(xlsx)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = re.sub(rb"(<dcterms:modified[^>]*>)[^<]*", rb"\g<1>" + stamp.encode(), data)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME), data, zipfile.ZIP_DEFLATED)
    return out.getvalue()


def korean_xlsx_bytes(rows: list[dict]) -> bytes:
    """The competition's ``meta_data.xlsx``: Korean headers, numeric IDs, sex ``남`` / ``여``."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append([KOREAN_HEADERS[c] for c in COLUMNS])
    for row in rows:
        sheet.append([KOREAN_SEX.get(row[c], row[c]) if c == "sex" else row[c] for c in COLUMNS])
    book.properties.creator = "handseg.phantom"
    book.properties.created = book.properties.modified = _EPOCH
    buf = io.BytesIO()
    book.save(buf)
    return _fixed_times(buf.getvalue())


def write_meta_table(out: Path, rows: list[dict], form: str = "csv") -> Path:
    """Write ``rows`` (dicts with :data:`COLUMNS`, sex ``M`` / ``F``) under ``out`` in ``form`` (one of
    :data:`META_FORMATS`), atomically, and remove the other form's file so that one table is read."""
    if form not in META_FORMATS:
        raise ValueError(f"unknown meta-data form {form!r}; choose from {META_FORMATS}")
    out = Path(out)
    path = out / META_FILES[form]
    if form == "csv":
        atomic_write_text(path, meta_csv_text(rows))
    else:
        atomic_write_bytes(path, korean_xlsx_bytes(rows))
    for other in set(META_FILES.values()) - {path.name}:
        (out / other).unlink(missing_ok=True)
    return path
