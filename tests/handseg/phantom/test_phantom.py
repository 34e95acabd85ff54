"""The phantom generator: layout, valid and exact labels, anatomy, X-ray appearance, determinism."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize
from handseg.format.submission import submission_order
from handseg.phantom import PhantomSpec, generate_dataset, is_complete, render_hand
from handseg.phantom.dataset import dataset_params
from handseg.phantom.render import bone_attenuation

NAME = re.compile(r"^image\d{13}_[RL]\.png$")


def _train_pairs(root: Path) -> list[tuple[Path, Path]]:
    pngs = sorted((root / "train" / "DCM").glob("ID*/*.png"))
    return [(p, root / "train" / "outputs_json" / p.parent.name / f"{p.stem}.json") for p in pngs]


def _centroid(poly: np.ndarray) -> np.ndarray:
    return poly.astype(np.float64).mean(axis=0)


def test_layout_and_file_counts(phantom_root: Path):
    train = sorted((phantom_root / "train" / "DCM").glob("*/*.png"))
    train_json = sorted((phantom_root / "train" / "outputs_json").glob("*/*.json"))
    test = sorted((phantom_root / "test" / "DCM").glob("*/*.png"))
    held_out = sorted((phantom_root / "test_labels" / "outputs_json").glob("*/*.json"))
    assert (len(train), len(train_json), len(test), len(held_out)) == (8, 8, 4, 4)
    assert not list((phantom_root / "test").rglob("*.json"))  # test labels stay outside the layout
    assert {p.parent.name for p in train} == {"ID001", "ID002", "ID003", "ID004"}
    assert {p.parent.name for p in test} == {"ID005", "ID006"}
    for png in train + test:
        assert NAME.match(png.name), png.name
        assert sorted(q.name[-5] for q in png.parent.glob("*.png")) == ["L", "R"]
    assert [p.stem for p in train] == [j.stem for j in train_json]
    assert len({p.name for p in train + test}) == 12
    with open(phantom_root / "meta_data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["ID", "age", "sex", "weight", "height"] and len(rows) == 6
    assert {r["sex"] for r in rows} <= {"M", "F"}


def test_sample_submission_covers_test_set_in_a_non_default_order(phantom_root: Path):
    sample = phantom_root / "sample_submission.csv"
    with open(sample, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image_name", "class", "rle"]
    names = sorted(p.name for p in (phantom_root / "test" / "DCM").glob("*/*.png"))
    pairs = [(r[0], r[1]) for r in rows[1:]]
    default = submission_order(names, None)
    assert sorted(pairs) == sorted(default) and len(pairs) == 4 * 29
    assert pairs != default
    assert submission_order(names, sample) == pairs


def test_every_annotation_passes_the_validator_with_29_classes(phantom_root: Path):
    pairs = _train_pairs(phantom_root)
    pairs += [(p, phantom_root / "test_labels" / "outputs_json" / p.parent.name / f"{p.stem}.json")
              for p in sorted((phantom_root / "test" / "DCM").glob("*/*.png"))]
    for png, js in pairs:
        image = read_image(png)
        ann = read_annotation(js, image_hw=image.shape)
        assert list(ann.polygons) == list(CLASSES)
        assert ann.filename == png.name and image.shape == (256, 256)
        for pts in ann.polygons.values():
            assert pts.dtype == np.int32 and len(pts) >= 3
            assert pts.min() >= 0 and pts.max() <= 255


def test_three_smallest_classes_are_finger16_trapezoid_pisiform():
    areas = []
    for seed in range(16):
        _, polys = render_hand(seed, 256, "RL"[seed % 2])
        areas.append([cv2.contourArea(polys[c].astype(np.float32).reshape(-1, 1, 2)) for c in CLASSES])
    mean = np.mean(areas, axis=0)
    smallest = {CLASSES[i] for i in np.argsort(mean)[:3]}
    assert smallest == {"finger-16", "Trapezoid", "Pisiform"}
    # and by a margin: the fourth smallest class is clearly larger than the third
    ordered = np.sort(mean)
    assert ordered[3] > 1.15 * ordered[2]


def test_pisiform_lies_over_triquetrum_and_trapezium_meets_trapezoid(phantom_root: Path):
    edge_overlaps = 0
    pairs = _train_pairs(phantom_root)
    for _, js in pairs:
        ann = read_annotation(js)
        masks = rasterize(polygons_in_order(ann), ann.hw).astype(bool)
        pis, tri = masks[CLASSES.index("Pisiform")], masks[CLASSES.index("Triquetrum")]
        assert (pis & tri).sum() > 0.3 * pis.sum()
        trapezium, trapezoid = masks[CLASSES.index("Trapezium")], masks[CLASSES.index("Trapezoid")]
        overlap = (trapezium & trapezoid).sum()
        assert overlap < 0.5 * trapezoid.sum()  # at their edge, not on top of each other
        edge_overlaps += overlap > 0
    assert edge_overlaps >= len(pairs) // 2


def test_bones_are_brighter_than_the_soft_tissue_around_them(phantom_root: Path):
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for png, js in _train_pairs(phantom_root):
        image = read_image(png).astype(np.float64)
        ann = read_annotation(js)
        bone = rasterize(polygons_in_order(ann), ann.hw).max(axis=0)
        ring = cv2.dilate(bone, kernel).astype(bool) & ~bone.astype(bool)
        background = np.median(np.concatenate([image[:8, :8].ravel(), image[:8, -8:].ravel()]))
        ring &= image > background + 10  # just outside the bone, inside the hand
        assert ring.sum() > 100
        assert image[bone > 0].mean() > image[ring].mean() + 15, png.name


def test_cortex_is_brighter_than_medulla():
    # A metacarpal shaft at 1024 px: the bone's rim (cortex) attenuates more than its centre (medulla).
    poly = np.array([[500, 200], [530, 200], [530, 600], [500, 600]], dtype=np.int32)
    (x0, _), att = bone_attenuation(poly, 1024, half_width_px=15.0, cortex=0.3, mu_medulla=0.36)
    profile = att[200, :]
    centre = profile[515 - x0]
    rim = profile[504 - x0]
    assert rim > 1.1 * centre > 0


def test_rendered_bone_is_exactly_the_annotated_polygon():
    _, polys = render_hand(3, 256, "R")
    for name in ("finger-16", "Pisiform", "Radius"):
        poly = polys[name]
        (x0, y0), att = bone_attenuation(poly, 256, half_width_px=4.0, cortex=0.3, mu_medulla=0.36)
        drawn = np.zeros((256, 256), bool)
        drawn[y0 : y0 + att.shape[0], x0 : x0 + att.shape[1]] = att > 0
        labelled = rasterize([poly], (256, 256))[0].astype(bool)
        assert np.array_equal(drawn, labelled), name


def test_left_hands_mirror_right_hands(phantom_root: Path):
    signs = {"R": set(), "L": set()}
    for _, js in _train_pairs(phantom_root):
        ann = read_annotation(js)
        wrist = _centroid(ann.polygons["Capitate"])
        axis = _centroid(ann.polygons["finger-11"]) - wrist  # towards the middle metacarpal
        thumb = _centroid(ann.polygons["finger-2"]) - wrist
        signs[ann.filename[-5]].add(np.sign(axis[0] * thumb[1] - axis[1] * thumb[0]))
    assert len(signs["R"]) == 1 and len(signs["L"]) == 1
    assert signs["R"] != signs["L"]


def test_fingers_are_numbered_from_the_thumb_tip_first():
    _, polys = render_hand(5, 256, "R")
    # distal phalanges lie farther from the wrist than their metacarpals; the thumb is rays' first
    wrist = _centroid(polys["Lunate"])
    for distal, metacarpal in (("finger-1", "finger-3"), ("finger-4", "finger-7"), ("finger-16", "finger-19")):
        assert np.linalg.norm(_centroid(polys[distal]) - wrist) > np.linalg.norm(_centroid(polys[metacarpal]) - wrist)
    xs = [_centroid(polys[f"finger-{i}"])[0] for i in (3, 7, 11, 15, 19)]  # metacarpals, thumb -> little
    assert xs == sorted(xs)  # a right hand: thumb on the image's left


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_with_one_or_two_worker_processes(tmp_path: Path):
    for name, workers in (("a", 1), ("b", 2)):
        generate_dataset(tmp_path / name, PhantomSpec(train_ids=1, test_ids=1, size=128, seed=7), progress=False,
                         workers=workers)
    generate_dataset(tmp_path / "c", PhantomSpec(train_ids=1, test_ids=1, size=128, seed=8), progress=False)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 11  # 2+2 PNG, 2+2 JSON, meta, sample submission, phantom.json
    assert a["meta_data.csv"] != c["meta_data.csv"]
    assert not set(a.values()) & {v for k, v in c.items() if k.endswith(".png")}
    assert is_complete(tmp_path / "a", dataset_params(PhantomSpec(1, 1, 128, 7)))
    assert not is_complete(tmp_path / "a", dataset_params(PhantomSpec(1, 1, 128, 8)))
    next((tmp_path / "a" / "test" / "DCM").rglob("*.png")).unlink()
    assert not is_complete(tmp_path / "a", dataset_params(PhantomSpec(1, 1, 128, 7)))


def test_render_hand_is_deterministic_and_varies_with_seed():
    a, pa = render_hand(11, 128, "L")
    b, pb = render_hand(11, 128, "L")
    c, _ = render_hand(12, 128, "L")
    assert a.dtype == np.uint8 and a.shape == (128, 128)
    assert np.array_equal(a, b) and all(np.array_equal(pa[k], pb[k]) for k in CLASSES)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError):
        render_hand(0, 128, "X")


def test_test_split_has_about_half_its_wrists_strongly_bent(tmp_path):
    """The test split mirrors the competition's shift: bent wrists in about half of the test images, about one
    in five training images (recorded in phantom.json); the training images do not depend on the test split's
    share."""
    import json

    from handseg.phantom.dataset import BENT_FRACTION, generate_dataset

    out = tmp_path / "data"
    generate_dataset(out, PhantomSpec(train_ids=30, test_ids=30, size=64, seed=0), preview=False, progress=False)
    info = json.loads((out / "phantom.json").read_text())
    assert info["bent_fraction"] == BENT_FRACTION == {"train": 0.2, "test": 0.5}
    bent, images = info["strongly_bent_images"], info["images"]
    assert images == {"train": 60, "test": 60}
    assert 0.1 <= bent["train"] / 60 <= 0.3  # drawn per image: binomial
    assert bent["test"] == 30  # exactly half, a seeded choice
    labels = sorted((out / "test_labels" / "outputs_json").rglob("*.json"))
    flags = [json.loads(p.read_text())["attributes"]["phantom"]["strongly_bent"] for p in labels]
    assert sum(flags) == bent["test"]
