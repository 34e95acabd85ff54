"""Submission CSV: header and row order of DESIGN.md, sample_submission order, validation, read back."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from handseg.format.classes import CLASSES
from handseg.format.rle import rle_decode, rle_encode_many
from handseg.format.submission import check_image_names, read_submission, submission_order, write_submission
from handseg.runtime.errors import DataFormatError

NAMES = ["image1661319116107.png", "image1661319145363.png"]  # sorted by their paths under test/DCM


@pytest.fixture()
def masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.random((len(CLASSES), 6, 5)) < 0.3 for name in NAMES}


@pytest.fixture()
def rles(masks) -> dict[str, list[str]]:
    out = {name: rle_encode_many(m) for name, m in masks.items()}
    out[NAMES[0]][4] = ""  # an empty mask is an empty field
    return out


def write_sample(path, pairs):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "class", "rle"])
        w.writerows([(a, b, "") for a, b in pairs])
    return path


def test_header_and_default_order_match_design(tmp_path, rles):
    path = write_submission(tmp_path / "out" / "submission.csv", rles)
    lines = path.read_text().splitlines()
    assert lines[0] == "image_name,class,rle"
    rows = list(csv.reader(lines[1:]))
    assert [(r[0], r[1]) for r in rows] == [(n, c) for n in NAMES for c in CLASSES]
    assert rows[4] == [NAMES[0], CLASSES[4], ""]
    assert rows[0][2] == rles[NAMES[0]][0]
    assert [p.name for p in path.parent.iterdir()] == ["submission.csv"]


def test_read_back_and_decode(tmp_path, rles, masks):
    path = write_submission(tmp_path / "s.csv", rles)
    back = read_submission(path)
    assert list(back) == [(n, c) for n in NAMES for c in CLASSES]
    for (name, cls), rle in back.items():
        assert rle == rles[name][CLASSES.index(cls)]
    i = CLASSES.index("Radius")
    np.testing.assert_array_equal(rle_decode(back[(NAMES[1], "Radius")], (6, 5)), masks[NAMES[1]][i])


def test_sample_submission_order_wins(tmp_path, rles):
    pairs = [(n, c) for n in NAMES for c in CLASSES]
    shuffled = [pairs[i] for i in np.random.default_rng(3).permutation(len(pairs))]
    sample = write_sample(tmp_path / "sample_submission.csv", shuffled)
    assert submission_order(NAMES, sample) == shuffled
    path = write_submission(tmp_path / "s.csv", rles, sample_submission=sample)
    back = read_submission(path)
    assert list(back) == shuffled
    assert back[shuffled[0]] == rles[shuffled[0][0]][CLASSES.index(shuffled[0][1])]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p[:-1], "1 predicted (image, class) pair(s) missing"),
        (lambda p: p + [("other.png", "Ulna")], "1 row(s) with no prediction: (other.png, Ulna)"),
        (lambda p: p + [p[0]], "appears twice"),
    ],
    ids=["missing", "extra", "duplicate"],
)
def test_sample_submission_must_cover_the_same_pairs(tmp_path, rles, change, message):
    sample = write_sample(tmp_path / "sample_submission.csv", change([(n, c) for n in NAMES for c in CLASSES]))
    out = tmp_path / "s.csv"
    out.write_text("previous\n")
    with pytest.raises(DataFormatError) as info:
        write_submission(out, rles, sample_submission=sample)
    assert "sample_submission.csv" in str(info.value) and message in str(info.value)
    assert out.read_text() == "previous\n"  # nothing written over the previous file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "sample_submission.csv"]


def test_bad_sample_submission_files(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        submission_order(NAMES, tmp_path / "none.csv")
    (tmp_path / "h.csv").write_text("name,cls,rle\na.png,finger-1,\n")
    with pytest.raises(DataFormatError, match="header"):
        submission_order(NAMES, tmp_path / "h.csv")
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        submission_order(NAMES, tmp_path / "e.csv")


def test_read_submission_rejects_malformed(tmp_path):
    bad = {
        "cls.csv": "image_name,class,rle\na.png,Femur,1 2\n",
        "dup.csv": "image_name,class,rle\na.png,Ulna,1 2\na.png,Ulna,\n",
        "cols.csv": "image_name,class,rle\na.png,Ulna\n",
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataFormatError, match=r"line [23]") as info:
            read_submission(tmp_path / name)
        assert name in str(info.value)


def test_wrong_number_of_rles(tmp_path):
    with pytest.raises(ValueError, match="29"):
        write_submission(tmp_path / "s.csv", {"a.png": [""] * 28})
    assert not (tmp_path / "s.csv").exists()


def test_repeated_bare_file_names_are_one_error_naming_both_paths(tmp_path):
    dcm = tmp_path / "test" / "DCM"
    check_image_names([dcm / "ID003" / "image100.png", dcm / "ID004" / "image200.png"])
    paths = [dcm / "ID003" / "image200.png", dcm / "ID004" / "image200.png", dcm / "ID005" / "a.png",
             dcm / "ID006" / "a.png"]
    with pytest.raises(DataFormatError) as err:
        check_image_names(paths)
    message = str(err.value)
    assert message.startswith(f"{paths[1]}: same file name as {paths[0]}: ") and "1 more repeated name" in message
    assert "\n" not in message
