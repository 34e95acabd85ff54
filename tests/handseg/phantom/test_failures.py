"""Failure cases of the phantom generator: off by default (byte-identical output), each changes the image and
its labels as documented, and the case sets are written in the test layout."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from handseg.format.annotations import read_annotation
from handseg.format.classes import CARPALS, CLASSES
from handseg.format.rasterize import rasterize
from handseg.phantom import PhantomSpec, generate_dataset, render_hand
from handseg.phantom.anatomy import sample_person
from handseg.phantom.failure_set import failure_sets_complete, generate_failure_cases
from handseg.phantom.failures import CASES, Failure
from handseg.phantom.render import render

SIZE = 256
# sha256 of two rendered hands and of a whole data set, made by the generator before the failure cases existed:
# with every option off the output is byte-identical to it.
RENDER_DIGEST = "27b6f2f2f84b108ca46599faa4eef3b43204d0f0d426f6d98671a07bfd221fba"
DATASET_DIGEST = "cf63eaac442f55f18c8ec3034f0fb68e911089da5d85347b90fdf30626ae88fd"


def test_options_off_leave_the_phantom_byte_identical():
    h = hashlib.sha256()
    for seed, side in ((3, "R"), (4, "L")):
        img, polys = render_hand(seed, 192, side)
        h.update(img.tobytes())
        for k, v in polys.items():
            h.update(k.encode())
            h.update(np.ascontiguousarray(v).tobytes())
    assert h.hexdigest() == RENDER_DIGEST
    root = Path(tempfile.mkdtemp())
    generate_dataset(root, PhantomSpec(1, 1, size=128, seed=7), progress=False)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".png", ".json") and p.name != "phantom.json":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    assert h.hexdigest() == DATASET_DIGEST


def _pair(case: str, seed: int = 5, side: str = "R"):
    """The plain hand and the same hand with the failure case (same person, same image draws)."""
    def person():
        return sample_person(np.random.default_rng(seed), 40, "F", 165.0)

    plain = render(np.random.default_rng([seed, 1]), SIZE, side, person())
    failed = render(np.random.default_rng([seed, 1]), SIZE, side, person(),
                    failure=Failure(case, np.random.default_rng([seed, 2])))
    return plain, failed


def _masks(polygons: dict) -> np.ndarray:
    return rasterize([polygons.get(c, np.zeros((0, 2))) for c in CLASSES], (SIZE, SIZE)).astype(bool)


def test_turned_and_mirrored_images_are_the_plain_image_turned_with_their_labels():
    plain, turned = _pair("upside_down")
    assert np.array_equal(turned.image, plain.image[::-1, ::-1])
    assert all(np.array_equal(turned.polygons[c], SIZE - 1 - plain.polygons[c]) for c in CLASSES)
    plain, mirrored = _pair("mirrored")
    assert np.array_equal(mirrored.image, plain.image[::-1])
    assert all(np.array_equal(mirrored.polygons[c][:, 0], plain.polygons[c][:, 0])
               and np.array_equal(mirrored.polygons[c][:, 1], SIZE - 1 - plain.polygons[c][:, 1]) for c in CLASSES)
    moved = _masks(mirrored.polygons) != _masks(plain.polygons)[:, ::-1]  # rasterised: up to edge ties
    assert moved.sum() < 0.03 * _masks(plain.polygons).sum()
    assert mirrored.info["failure"] == {"case": "mirrored", "bones": list(CLASSES)}


def test_cut_fingers_lose_their_tips_to_the_top_edge():
    plain, cut = _pair("cut_fingers")
    bones = cut.info["failure"]["bones"]
    assert bones and all(b.startswith("finger-") for b in bones)
    assert "finger-8" in bones  # the middle finger is the longest: its tip is always cut
    assert len(cut.polygons) < 29 or any(cut.polygons[b][:, 1].min() == 0 for b in bones if b in cut.polygons)
    for b in bones:  # every bone the case names is cut (touches the top edge) or gone
        assert b not in cut.polygons or cut.polygons[b][:, 1].min() == 0
    assert all(cut.polygons[b][:, 1].min() > 0 for b in cut.polygons if b not in bones)


def test_cast_and_plate_cover_the_wrist_and_name_its_bones():
    plain, cast = _pair("cast")
    bones = set(cast.info["failure"]["bones"])
    assert {"Radius", "Ulna", "Capitate", "Lunate"} <= bones and "finger-8" not in bones
    under = _masks(cast.polygons)[CLASSES.index("Capitate")]
    assert cast.image[under].mean() > plain.image[under].mean() + 20  # the plaster whitens the bones under it
    plain, plate = _pair("plate")
    bones = set(plate.info["failure"]["bones"])
    assert {"Radius", "finger-11"} <= bones and "finger-16" not in bones
    assert (plate.image >= 250).sum() > 50 * (plain.image >= 250).sum() + 100  # saturated metal


def test_child_hand_is_small_with_small_carpals_and_open_growth_plates():
    plain, child = _pair("child")
    assert child.info["failure"]["bones"] == list(CLASSES)
    plain_m, child_m = _masks(plain.polygons), _masks(child.polygons)
    ratio = child_m[:19].any(0).sum() / plain_m[:19].any(0).sum()  # the fingers' area in the image
    assert 0.3 < ratio < 0.6
    carpal = [CLASSES.index(c) for c in CARPALS]
    assert child_m[carpal].sum() / child_m[:19].sum() < 0.5 * plain_m[carpal].sum() / plain_m[:19].sum()
    radius = child_m[CLASSES.index("Radius")]
    rows = [child.image[y][radius[y]].mean() for y in range(SIZE) if radius[y].sum() > 3]
    assert min(rows) < np.median(rows) - 15  # a dark growth plate across the distal radius


@pytest.mark.parametrize("case", ["blank", "non_hand"])
def test_blank_and_non_hand_images_have_no_labels(case):
    plain, other = _pair(case)
    assert other.polygons == {} and other.info["failure"]["bones"] == list(CLASSES)
    assert not np.array_equal(other.image, plain.image)
    spread = np.percentile(other.image, 99) - np.percentile(other.image, 1)
    assert (spread < 25) if case == "blank" else (spread > 60)


def test_unknown_case_is_refused():
    with pytest.raises(ValueError, match="unknown failure case"):
        Failure("broken", np.random.default_rng(0))


def test_case_sets_are_written_in_the_test_layout(tmp_path):
    folders = generate_failure_cases(tmp_path, ["cut_fingers", "blank"], persons=1, size=128, seed=3)
    assert failure_sets_complete(tmp_path, {"cases": ["cut_fingers", "blank"], "persons": 1, "size": 128, "seed": 3})
    assert not failure_sets_complete(tmp_path, {"cases": list(CASES), "persons": 1, "size": 128, "seed": 3})
    for case, folder in folders.items():
        pngs = sorted((folder / "test" / "DCM").rglob("*.png"))
        assert len(pngs) == 2
        for png in pngs:
            js = folder / "test_labels" / "outputs_json" / png.parent.name / f"{png.stem}.json"
            ann = read_annotation(js, image_hw=(128, 128), require_all=False)
            record = json.loads(js.read_text())["attributes"]["phantom"]["failure"]
            assert record["case"] == case and record["bones"]
            assert (len(ann.polygons) == 0) == (case == "blank")
    # Two worker processes write the same files, byte for byte (each case draws from its own streams).
    again = tmp_path / "again"
    generate_failure_cases(again, ["cut_fingers", "blank"], persons=1, size=128, seed=3, preview=True, workers=2)
    generate_failure_cases(tmp_path / "one", ["cut_fingers", "blank"], persons=1, size=128, seed=3, preview=True)
    first = sorted(f.relative_to(tmp_path / "one") for f in (tmp_path / "one").rglob("*") if f.is_file())
    second = sorted(f.relative_to(again) for f in again.rglob("*") if f.is_file())
    assert first == second and len(first) == 11  # per case: 2 images, 2 labels, preview; and the record
    assert all((again / f).read_bytes() == (tmp_path / "one" / f).read_bytes() for f in first)
