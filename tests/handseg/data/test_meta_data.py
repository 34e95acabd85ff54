"""meta_data.csv / .xlsx in English or in the competition's Korean form, read into one vocabulary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from handseg.data.dataset_index import Sample, assign_folds
from handseg.data.meta_data import canonical_header, canonical_sex, meta_column, meta_mapping, read_meta
from handseg.phantom.dataset import meta_rows
from handseg.phantom.meta_table import korean_xlsx_bytes, write_meta_table
from handseg.runtime.errors import DataFormatError


def person_samples(n_ids: int) -> list[Sample]:
    """One file-less sample per person ``ID001`` ..., enough for fold assignment."""
    return [Sample(Path(f"ID{i:03d}/a.png"), None, f"ID{i:03d}", "a.png", f"ID{i:03d}/a.png")
            for i in range(1, n_ids + 1)]


@pytest.mark.parametrize("header, name", [
    ("나이", "age"), ("성별", "sex"), ("체중(몸무게)", "weight"), ("키(신장)", "height"), (" 키 ( 신장 ) ", "height"),
    ("체중（몸무게）", "weight"), ("(몸무게)", "weight"), ("Age", "age"), ("AGE (years)", "age"), ("Sex", "sex"),
    ("gender", "sex"), ("Weight (kg)", "weight"), ("weight[kg]", "weight"), ("Body weight", "weight"),
    ("HEIGHT [cm]", "height"), ("height_cm", None), ("hand", None), ("BMI", None), ("(kg)", None),
])
def test_canonical_header(header, name):
    assert canonical_header(header) == name


@pytest.mark.parametrize("value, code", [
    ("남", "M"), ("여", "F"), (" 남자 ", "M"), ("여성", "F"), ("M", "M"), ("f", "F"), ("Male", "M"), ("FEMALE", "F"),
    ("x", "x"), (3, 3),
])
def test_canonical_sex(value, code):
    assert canonical_sex(value) == code


def test_korean_xlsx_reads_as_the_english_csv(tmp_path):
    rows = meta_rows(seed=0, n_persons=6)
    english, korean = tmp_path / "en", tmp_path / "ko"
    write_meta_table(english, rows, "csv")
    write_meta_table(korean, rows, "xlsx-ko")
    assert not (korean / "meta_data.csv").exists()
    assert list(pd.read_excel(korean / "meta_data.xlsx").columns) == ["ID", "나이", "성별", "체중(몸무게)", "키(신장)"]
    assert set(pd.read_excel(korean / "meta_data.xlsx")["성별"]) <= {"남", "여"}
    en, ko = read_meta(english), read_meta(korean)
    pd.testing.assert_frame_equal(en, ko)
    assert list(ko.columns) == ["age", "sex", "weight", "height"] and list(ko.index[:2]) == ["ID001", "ID002"]
    assert ko.attrs["columns"] == {"나이": "age", "성별": "sex", "체중(몸무게)": "weight", "키(신장)": "height"}
    lines = meta_mapping(ko)
    assert lines[0] == "columns: 나이 -> age, 성별 -> sex, 체중(몸무게) -> weight, 키(신장) -> height"
    assert lines[1].startswith("sex values: 남 -> M, 여 -> F (F: ")
    assert korean_xlsx_bytes(rows) == korean_xlsx_bytes(rows)  # byte-identical: no save-time stamps


def test_unknown_headers_are_kept_and_sex_spellings_merge(tmp_path):
    (tmp_path / "meta_data.csv").write_text(
        "id ,Age (years),GENDER,BMI,Weight[kg]\n1,30,male,22,70\n2,40,여,21,55\n3,50,F,,60\n4,60,?,,\n",
        encoding="utf-8")
    meta = read_meta(tmp_path)
    assert list(meta.columns) == ["age", "sex", "BMI", "weight"]
    assert list(meta["sex"]) == ["M", "F", "F", "?"]
    assert meta_mapping(meta)[0] == "columns: Age (years) -> age, GENDER -> sex, Weight[kg] -> weight, BMI (kept as is)"
    assert meta_column(meta, "성별") == meta_column(meta, "Sex") == "sex"
    assert meta_column(meta, "BMI") == "BMI"
    with pytest.raises(ValueError, match="'hand' not in meta data"):
        meta_column(meta, "hand")


def test_cp949_csv_and_two_columns_meaning_one(tmp_path):
    (tmp_path / "meta_data.csv").write_bytes("ID,나이,성별\n1,30,남\n2,31,여\n".encode("cp949"))
    meta = read_meta(tmp_path)
    assert list(meta["sex"]) == ["M", "F"] and list(meta["age"]) == [30, 31]
    (tmp_path / "meta_data.csv").write_text("ID,age,나이\n1,30,30\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="columns 'age' and '나이' both mean age"):
        read_meta(tmp_path)


def test_folds_stratified_on_the_korean_file_match_the_english_ones(tmp_path):
    rows = meta_rows(seed=1, n_persons=30)
    write_meta_table(tmp_path / "en", rows, "csv")
    write_meta_table(tmp_path / "ko", rows, "xlsx-ko")
    samples = person_samples(30)
    folds = {form: assign_folds(samples, 5, seed=0, stratify="sex", meta=read_meta(tmp_path / form))
             for form in ("en", "ko")}
    assert folds["en"] == folds["ko"]
    assert folds["en"] == assign_folds(samples, 5, seed=0, stratify="성별", meta=read_meta(tmp_path / "ko"))
    sex = {f"ID{r['ID']:03d}": r["sex"] for r in rows}
    for code in ("M", "F"):
        per_fold = Counter(f for p, f in folds["ko"].items() if sex[p] == code)
        assert max(per_fold.values()) - min(per_fold.get(f, 0) for f in range(5)) <= 1
