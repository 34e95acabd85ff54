"""Dataset index: pairing, bad layouts, meta data, and group K-fold splits that never leak a person."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from handseg.data.dataset_index import (
    Sample,
    assign_folds,
    fold_summary,
    index_split,
    load_folds,
    read_meta,
    save_folds,
    split_fold,
    validate_samples,
)
from handseg.runtime.errors import DataFormatError
from tests.handseg.synthetic import make_dataset, write_sample


@pytest.fixture()
def data_root(tmp_path) -> Path:
    return make_dataset(tmp_path / "data", train_ids=3, test_ids=1, size=24)


def fake_samples(n_ids: int, per_id: int = 2) -> list[Sample]:
    """Samples without files, for split tests with many persons."""
    out = []
    for i in range(1, n_ids + 1):
        pid = f"ID{i:03d}"
        for side in ("R", "L", "X")[:per_id]:
            rel = f"{pid}/image{i:013d}_{side}.png"
            out.append(Sample(Path("DCM") / rel, Path("json") / rel, pid, Path(rel).name, rel))
    return out


def test_index_train_and_test(data_root):
    train = index_split(data_root, "train")
    assert [s.rel for s in train] == sorted(s.rel for s in train) and len(train) == 6
    assert Counter(s.patient_id for s in train) == {"ID001": 2, "ID002": 2, "ID003": 2}
    for s in train:
        assert s.image_path == data_root / "train" / "DCM" / s.rel
        assert s.label_path == data_root / "train" / "outputs_json" / s.rel.replace(".png", ".json")
        assert s.name == Path(s.rel).name and s.rel.startswith(s.patient_id + "/")
    test = index_split(data_root, "test")
    assert [s.patient_id for s in test] == ["ID004", "ID004"]
    assert all(s.label_path is None for s in test)
    assert validate_samples(train + test) == []


def test_unpaired_files_are_reported_with_count(data_root):
    write_sample(data_root, "train", "ID009", "image0000000000001_R", 24, label=False)
    json_dir = data_root / "train" / "outputs_json" / "ID001"
    (json_dir / "orphan.json").write_text("{}")
    with pytest.raises(DataFormatError) as info:
        index_split(data_root, "train")
    msg = str(info.value)
    assert "1 PNG(s) without annotation JSON: DCM/ID009/image0000000000001_R.png" in msg
    assert "1 JSON(s) without PNG: outputs_json/ID001/orphan.json" in msg
    for k in range(5):
        write_sample(data_root, "train", "ID010", f"image000000000001{k}_L", 24, label=False)
    with pytest.raises(DataFormatError, match=r"6 PNG\(s\) without annotation JSON: .*, \.\.\."):
        index_split(data_root, "train")


def test_bad_roots(tmp_path, data_root):
    with pytest.raises(DataFormatError, match="data root not found"):
        index_split(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="train/DCM") as info:
        index_split(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    (tmp_path / "nopng" / "train" / "DCM" / "ID001").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="no PNG images"):
        index_split(tmp_path / "nopng")
    write_sample(tmp_path / "nojson", "train", "ID001", "a", 8)
    (tmp_path / "nojson" / "train" / "outputs_json").rename(tmp_path / "elsewhere")
    with pytest.raises(DataFormatError, match="outputs_json"):
        index_split(tmp_path / "nojson")
    write_sample(tmp_path / "flat", "test", ".", "a", 8)
    with pytest.raises(DataFormatError, match="IDxxx folder"):
        index_split(tmp_path / "flat", "test")


def test_validate_samples_collects_every_problem(data_root):
    train = index_split(data_root, "train")
    train[0].image_path.write_bytes(b"")
    train[3].label_path.write_text('{"annotations": [')
    problems = validate_samples(train)
    assert [p.path for p in problems] == [train[0].image_path, train[3].label_path]
    assert "empty" in str(problems[0]) and "malformed JSON" in str(problems[1])


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
@pytest.mark.parametrize("n_ids, n_folds", [(50, 5), (23, 4), (10, 10)])
def test_folds_never_split_a_person(seed, n_ids, n_folds):
    samples = fake_samples(n_ids)
    folds = assign_folds(samples, n_folds=n_folds, seed=seed)
    assert set(folds) == {s.patient_id for s in samples}
    sizes = Counter(folds.values())
    assert set(sizes) == set(range(n_folds)) and max(sizes.values()) - min(sizes.values()) <= 1
    seen = Counter()
    for fold in range(n_folds):
        train, val = split_fold(samples, folds, fold)
        assert {s.patient_id for s in train}.isdisjoint({s.patient_id for s in val})
        assert len(train) + len(val) == len(samples)
        seen.update(s.rel for s in val)
    assert set(seen.values()) == {1} and len(seen) == len(samples)  # every image validated exactly once
    assert assign_folds(samples, n_folds=n_folds, seed=seed) == folds  # deterministic


def test_seeds_give_different_splits():
    samples = fake_samples(40)
    assert assign_folds(samples, 5, seed=0) != assign_folds(samples, 5, seed=1)


def test_too_few_persons_or_folds():
    with pytest.raises(ValueError, match="cannot fill"):
        assign_folds(fake_samples(3), n_folds=5)
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(fake_samples(3), n_folds=1)
    folds = assign_folds(fake_samples(4), n_folds=2)
    with pytest.raises(ValueError, match="fold 3"):
        split_fold(fake_samples(4), folds, 3)
    with pytest.raises(ValueError, match="no fold"):
        split_fold(fake_samples(5), folds, 0)


def meta_frame(n_ids: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ids = [f"ID{i:03d}" for i in range(1, n_ids + 1)]
    return pd.DataFrame(
        {"age": rng.integers(18, 80, n_ids), "sex": ["M" if i % 3 else "F" for i in range(n_ids)]},
        index=pd.Index(ids, name="ID"),
    )


@pytest.mark.parametrize("seed", [0, 5])
def test_stratified_folds_balance_each_stratum(seed):
    samples, meta = fake_samples(60), meta_frame(60)
    for column in ("sex", "age"):
        folds = assign_folds(samples, n_folds=5, seed=seed, stratify=column, meta=meta)
        assert Counter(folds.values()) == {f: 12 for f in range(5)}
        strata = meta["sex"] if column == "sex" else pd.qcut(meta["age"], 4, duplicates="drop").astype(str)
        for value in strata.unique():
            per_fold = Counter(folds[p] for p in strata.index[strata == value])
            counts = [per_fold.get(f, 0) for f in range(5)]
            assert max(counts) - min(counts) <= 1, (column, value, counts)
        assert assign_folds(samples, n_folds=5, seed=seed, stratify=column, meta=meta) == folds
        summary = fold_summary(samples, folds, meta=meta, stratify=column)
        assert f"{column}=" in summary


def test_stratify_errors():
    with pytest.raises(ValueError, match="needs meta_data"):
        assign_folds(fake_samples(10), 2, stratify="sex", meta=None)
    with pytest.raises(ValueError, match="'hand' not in meta"):
        assign_folds(fake_samples(10), 2, stratify="hand", meta=meta_frame(10))


def test_read_meta_csv_xlsx_and_numeric_ids(tmp_path, data_root):
    meta = read_meta(data_root)
    assert list(meta.index) == ["ID001", "ID002", "ID003", "ID004"]
    assert list(meta.columns) == ["age", "sex", "weight", "height"]
    xlsx_root = tmp_path / "x"
    xlsx_root.mkdir()
    pd.DataFrame({"ID": [1, 2, 12], "sex": ["F", "M", "M"], "age": [30, 40, 50]}).to_excel(
        xlsx_root / "meta_data.xlsx", index=False
    )
    meta = read_meta(xlsx_root)
    assert list(meta.index) == ["ID001", "ID002", "ID012"] and meta.loc["ID012", "age"] == 50
    assert read_meta(tmp_path) is None
    (xlsx_root / "meta_data.csv").write_text("person,age\n1,3\n")
    with pytest.raises(DataFormatError, match="no ID column"):
        read_meta(xlsx_root)
    (xlsx_root / "meta_data.csv").write_text("ID,age\nID001,3\nID001,4\n")
    with pytest.raises(DataFormatError, match="ID repeats"):
        read_meta(xlsx_root)


def test_save_and_load_folds(tmp_path):
    folds = assign_folds(fake_samples(12), n_folds=3, seed=4)
    for name in ("folds.json", "folds.csv"):
        path = save_folds(tmp_path / "runs" / name, folds)
        assert load_folds(path) == folds
    data = json.loads((tmp_path / "runs" / "folds.json").read_text())
    assert data["n_folds"] == 3 and data["folds"] == dict(sorted(folds.items()))
    assert (tmp_path / "runs" / "folds.csv").read_text().splitlines()[0] == "patient_id,fold"
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(DataFormatError, match="malformed folds"):
        load_folds(tmp_path / "bad.json")


def test_fold_summary_lists_every_person_once():
    samples = fake_samples(9)
    folds = assign_folds(samples, n_folds=3, seed=0)
    text = fold_summary(samples, folds)
    lines = text.splitlines()
    assert len(lines) == 3 and all("3 person(s), 6 image(s)" in ln for ln in lines)
    for pid in folds:
        assert text.count(pid) == 1


def test_phantom_data_set_indexes_and_validates(phantom_root):
    train, test = index_split(phantom_root, "train"), index_split(phantom_root, "test")
    assert len(train) == 8 and len({s.patient_id for s in train}) == 4
    assert len(test) == 4 and len({s.patient_id for s in test}) == 2
    assert validate_samples(train + test, decode=True) == []
    meta = read_meta(phantom_root)
    assert meta is not None and {s.patient_id for s in train} <= set(meta.index)
    folds = assign_folds(train, n_folds=2, seed=0, stratify="sex", meta=meta)
    for fold in (0, 1):
        tr, val = split_fold(train, folds, fold)
        assert len(val) == 4 and {s.patient_id for s in tr}.isdisjoint({s.patient_id for s in val})
