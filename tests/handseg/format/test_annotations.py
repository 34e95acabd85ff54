"""Annotation JSON: competition format out, validation with the file named on every problem in."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handseg.format.annotations import ImageAnnotation, polygons_in_order, read_annotation, write_annotation
from handseg.format.classes import CLASSES
from handseg.runtime.errors import DataFormatError
from tests.handseg.synthetic import class_polygons

SIZE = 40


@pytest.fixture()
def ann() -> ImageAnnotation:
    return ImageAnnotation("image1661130828152_R.png", SIZE, SIZE, class_polygons(SIZE, seed=3))


@pytest.fixture()
def good_json(tmp_path, ann) -> dict:
    write_annotation(tmp_path / "good.json", ann)
    return json.loads((tmp_path / "good.json").read_text())


def test_write_then_read_round_trip(tmp_path, ann):
    path = write_annotation(tmp_path / "ID001" / "a.json", ann, extra={"parent_path": "/ID001"})
    back = read_annotation(path, image_hw=(SIZE, SIZE))
    assert back.filename == ann.filename and (back.height, back.width) == (SIZE, SIZE)
    assert list(back.polygons) == list(CLASSES)
    for name in CLASSES:
        assert back.polygons[name].dtype == np.int32 and back.polygons[name].shape[1] == 2
        np.testing.assert_array_equal(back.polygons[name], ann.polygons[name])
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_written_json_is_the_competition_format(good_json, ann):
    assert {"annotations", "attributes", "file_id", "filename", "parent_path", "last_modifier_id",
            "last_workers", "metadata"} <= set(good_json)
    assert good_json["metadata"] == {"height": SIZE, "width": SIZE}
    assert good_json["filename"] == ann.filename
    assert [a["label"] for a in good_json["annotations"]] == list(CLASSES)
    first = good_json["annotations"][0]
    assert set(first) == {"id", "type", "attributes", "points", "label"}
    assert first["type"] == "poly_seg" and first["attributes"] == {} and isinstance(first["id"], str)
    assert all(isinstance(v, int) for p in first["points"] for v in p)
    assert len({a["id"] for a in good_json["annotations"]}) == len(CLASSES)


def test_writer_is_deterministic_and_extra_overrides(tmp_path, ann):
    a = write_annotation(tmp_path / "a.json", ann).read_bytes()
    b = write_annotation(tmp_path / "b.json", ann).read_bytes()
    assert a == b
    data = json.loads(write_annotation(tmp_path / "c.json", ann, extra={"file_id": "xyz", "more": 1}).read_text())
    assert data["file_id"] == "xyz" and data["more"] == 1


def test_reader_tolerates_extra_keys_and_float_points(tmp_path, good_json):
    good_json["something_new"] = {"a": 1}
    good_json["metadata"]["camera"] = "x"
    good_json["annotations"][0]["extra"] = [1, 2]
    good_json["annotations"][1]["points"] = [[1.4, 2.6], [10.0, 2.0], [5.5, 9.0]]
    (tmp_path / "x.json").write_text(json.dumps(good_json))
    back = read_annotation(tmp_path / "x.json")
    np.testing.assert_array_equal(back.polygons[CLASSES[1]], [[1, 3], [10, 2], [6, 9]])


def _mutations():
    def drop_class(d):
        d["annotations"].pop(5)

    def dup_class(d):
        d["annotations"][3]["label"] = d["annotations"][2]["label"]

    def set_ann(i, key, value):
        def f(d):
            d["annotations"][i][key] = value
        return f

    def set_meta(key, value):
        def f(d):
            d["metadata"][key] = value
        return f

    return [
        ("unknown label", set_ann(0, "label", "finger-20"), "unknown label 'finger-20'"),
        ("label wrong type", set_ann(0, "label", 7), "'label' must be a string"),
        ("duplicate class", dup_class, "appears twice"),
        ("two points", set_ann(4, "points", [[1, 1], [5, 5]]), "2 point"),
        ("point not a pair", set_ann(4, "points", [[1, 1], [5, 5, 5], [3, 3]]), "point 1 must be"),
        ("point wrong type", set_ann(4, "points", [[1, 1], ["5", 5], [3, 3]]), "point 1 must be"),
        ("points not a list", set_ann(4, "points", "1 2 3"), "'points' must be a list"),
        ("negative x", set_ann(6, "points", [[-1, 1], [5, 5], [3, 9]]), "outside the 40x40 image"),
        ("y beyond height", set_ann(6, "points", [[1, 1], [5, 41], [3, 9]]), "outside the 40x40 image"),
        ("missing class", drop_class, "1 class(es) missing"),
        ("annotations not a list", lambda d: d.__setitem__("annotations", {}), "'annotations' list"),
        ("annotation not an object", set_ann_item(), "must be an object"),
        ("no metadata", lambda d: d.pop("metadata"), "metadata"),
        ("width wrong type", set_meta("width", "40"), "metadata.width"),
        ("height zero", set_meta("height", 0), "metadata.height"),
        ("filename wrong type", lambda d: d.__setitem__("filename", 3), "'filename' must be a string"),
    ]


def set_ann_item():
    def f(d):
        d["annotations"][0] = ["finger-1"]
    return f


@pytest.mark.parametrize("case, mutate, message", _mutations(), ids=[m[0] for m in _mutations()])
def test_invalid_annotation_names_file_and_problem(tmp_path, good_json, case, mutate, message):
    mutate(good_json)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(good_json))
    with pytest.raises(DataFormatError) as info:
        read_annotation(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"annotations": [{"id": "a", "points": [[1, 2], ', "malformed JSON at line 1"),
        ("this is not json", "malformed JSON"),
        ("", "empty file"),
        ("[1, 2, 3]", "top level must be a JSON object"),
    ],
    ids=["truncated", "not json", "empty", "top-level list"],
)
def test_malformed_json_text(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=message) as info:
        read_annotation(path)
    assert str(path) in str(info.value)


def test_truncated_real_file(tmp_path, ann):
    data = write_annotation(tmp_path / "a.json", ann).read_bytes()
    (tmp_path / "cut.json").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataFormatError, match="malformed JSON"):
        read_annotation(tmp_path / "cut.json")


def test_size_disagreeing_with_image(tmp_path, ann):
    path = write_annotation(tmp_path / "a.json", ann)
    with pytest.raises(DataFormatError, match="40x40 .* image is 50x40") as info:
        read_annotation(path, image_hw=(40, 50))
    assert "a.json" in str(info.value)


def test_missing_classes_allowed_when_not_required(tmp_path, ann):
    ann.polygons = {k: v for k, v in ann.polygons.items() if k in ("Radius", "finger-1")}
    path = write_annotation(tmp_path / "a.json", ann)
    with pytest.raises(DataFormatError, match="27 class"):
        read_annotation(path)
    back = read_annotation(path, require_all=False)
    assert list(back.polygons) == ["finger-1", "Radius"]
    ordered = polygons_in_order(back)
    assert len(ordered) == len(CLASSES)
    assert ordered[CLASSES.index("Radius")].shape[0] >= 3 and ordered[1].shape == (0, 2)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(DataFormatError, match="not found"):
        read_annotation(tmp_path / "none.json")


def test_writer_rejects_bad_polygons(tmp_path):
    bad = ImageAnnotation("a.png", 8, 8, {"finger-1": np.array([[1, 1], [2, 2]])})
    with pytest.raises(ValueError, match="finger-1"):
        write_annotation(tmp_path / "a.json", bad)
    with pytest.raises(ValueError, match="unknown label"):
        write_annotation(tmp_path / "a.json", ImageAnnotation("a.png", 8, 8, {"Femur": np.zeros((3, 2))}))
    assert not list(tmp_path.iterdir())
