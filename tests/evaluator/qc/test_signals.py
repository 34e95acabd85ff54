"""QC signals, flags and reasons on constructed cases: phantom labels taken as a perfect prediction, then broken
(a bone missing, Radius and Ulna swapped, two bones on top of each other, a finger chain cut by the frame or out
of order, the hand upside down)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.qc.findings import assess_findings, named_bones, reason_text
from evaluator.qc.geometry import bone_geometry, hand_frame, pieces
from evaluator.qc.reference import AnatomyReference, fit_reference, label_masks
from evaluator.qc.signals import ProbeResults, image_signals
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASS_TO_INDEX, CLASSES
from handseg.phantom import render_hand
from handseg.phantom.anatomy import sample_person
from handseg.phantom.failures import Failure
from handseg.phantom.render import render

SIZE = 256


def _labels(seed: int, side: str = "R") -> ClassMasks:
    _, polys = render_hand(seed, SIZE, side)
    return ClassMasks.from_polygons([polys[c] for c in CLASSES], (SIZE, SIZE))


@pytest.fixture(scope="module")
def reference() -> AnatomyReference:
    images = []
    for seed in range(12):
        _, polys = render_hand(100 + seed, SIZE, "RL"[seed % 2])
        images.append(label_masks([polys[c] for c in CLASSES], (SIZE, SIZE)))
    return fit_reference(images)


def _assess(masks: ClassMasks, reference: AnatomyReference | None):
    probes = ProbeResults(np.zeros(len(CLASSES), dtype=np.int64), masks.areas())
    signals = image_signals(masks, masks, probes, reference)
    flag, findings = assess_findings(signals, None, None)
    return signals, flag, findings


def _replace(masks: ClassMasks, changes: dict) -> ClassMasks:
    boxes, crops = list(masks.boxes), list(masks.masks)
    for c, (box, crop) in changes.items():
        boxes[CLASS_TO_INDEX[c]], crops[CLASS_TO_INDEX[c]] = box, crop
    return ClassMasks(masks.height, masks.width, boxes, crops)


def _get(masks: ClassMasks, name: str):
    c = CLASS_TO_INDEX[name]
    return masks.boxes[c], masks.masks[c]


@pytest.mark.parametrize("seed,side", [(1, "R"), (2, "L"), (3, "R")])
def test_a_correct_hand_is_not_flagged(reference, seed, side):
    signals, flag, findings = _assess(_labels(seed, side), reference)
    assert not flag and findings == []
    assert signals.present.all() and not signals.swapped and signals.out_of_order == []
    assert abs(signals.angle_offset) < 40
    assert np.nanmax(signals.feature("position")) < 4 and np.nanmax(signals.feature("area")) < 4


def test_a_missing_bone_is_named(reference):
    masks = _replace(_labels(1), {"finger-16": (None, None)})
    _, flag, findings = _assess(masks, reference)
    assert flag and reason_text(findings) == "finger-16 missing"
    assert named_bones(findings) == {"finger-16"}


def test_swapped_radius_and_ulna(reference):
    masks = _labels(2, "L")
    masks = _replace(masks, {"Radius": _get(masks, "Ulna"), "Ulna": _get(masks, "Radius")})
    signals, flag, findings = _assess(masks, reference)
    assert signals.swapped and flag
    assert "Radius and Ulna swapped sides" in reason_text(findings)
    assert _assess(masks, None)[0].swapped  # needs no reference


def test_two_bones_on_top_of_each_other(reference):
    masks = _labels(3)
    (y0, x0, y1, x1), capitate = _get(masks, "Capitate")
    _, lunate = _get(masks, "Lunate")
    h, w = lunate.shape
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    moved = (cy - h // 2, cx - w // 2, cy - h // 2 + h, cx - w // 2 + w)
    signals, flag, findings = _assess(_replace(masks, {"Lunate": (moved, lunate)}), reference)
    assert flag
    assert signals.overlap_with[CLASS_TO_INDEX["Lunate"]] == CLASS_TO_INDEX["Capitate"]
    assert "Lunate overlaps Capitate" in reason_text(findings)
    assert {"Lunate", "Capitate"} <= named_bones(findings)


def test_a_finger_chain_cut_by_the_frame(reference):
    rng = np.random.default_rng
    person = sample_person(rng(4), 40, "M", 175.0)
    hand = render(rng([4, 1]), SIZE, "R", person, failure=Failure("cut_fingers", rng([4, 2])))
    masks = ClassMasks.from_polygons([hand.polygons.get(c, np.zeros((0, 2))) for c in CLASSES], (SIZE, SIZE))
    signals, flag, findings = _assess(masks, reference)
    assert flag
    text = reason_text(findings)
    assert "middle finger cut by the frame (finger-8" in text
    assert named_bones(findings) <= set(hand.info["failure"]["bones"]) | {"finger-4", "finger-12", "finger-16"}


def test_a_chain_out_of_order(reference):
    masks = _labels(1)
    masks = _replace(masks, {"finger-5": _get(masks, "finger-6"), "finger-6": _get(masks, "finger-5")})
    signals, flag, findings = _assess(masks, reference)
    assert ("index", CLASS_TO_INDEX["finger-5"], CLASS_TO_INDEX["finger-6"]) in signals.out_of_order
    assert flag and "finger-5 out of order in the index finger" in reason_text(findings)


def test_an_upside_down_hand(reference):
    masks = _labels(2)
    turned = ClassMasks.from_dense(masks.to_dense().flip(-1).flip(-2))
    signals, flag, findings = _assess(turned, reference)
    assert abs(signals.angle_offset) > 150
    assert flag and reason_text(findings).startswith("hand upside down")
    assert named_bones(findings) == set(CLASSES)


def test_no_hand(reference):
    empty = ClassMasks(SIZE, SIZE, [None] * 29, [None] * 29)
    _, flag, findings = _assess(empty, reference)
    assert flag and reason_text(findings) == "no hand found (29 of 29 bones missing)"


def test_pieces_and_the_hand_frame():
    masks = _labels(5)
    box, scaphoid = _get(masks, "Scaphoid")
    split = scaphoid.clone()
    split[:, split.shape[1] // 2 - 1:split.shape[1] // 2 + 1] = False  # cut across: two halves
    share, count = pieces(_replace(masks, {"Scaphoid": (box, split)}))
    c = CLASS_TO_INDEX["Scaphoid"]
    assert count[c] == 2 and 0.4 < share[c] < 0.75
    frame = hand_frame(bone_geometry(masks))
    assert 45 < frame.angle < 135  # fingers up
    thumb = bone_geometry(masks).centroid[CLASS_TO_INDEX["finger-2"]] - frame.origin
    assert float(thumb @ frame.lateral) > 0  # the lateral axis points to the thumb


def test_reference_round_trips_and_ignores_the_forearm_area(reference):
    again = AnatomyReference.from_dict(reference.to_dict())
    assert np.allclose(again.area_mean, reference.area_mean, equal_nan=True, atol=1e-5)
    assert np.allclose(again.position_sd, reference.position_sd, atol=1e-5)
    assert np.isnan(reference.area_mean[CLASS_TO_INDEX["Radius"]])
    assert reference.overlap_limit(CLASS_TO_INDEX["Triquetrum"], CLASS_TO_INDEX["Pisiform"]) > 0.3
    assert 60 < reference.angle_mean < 120 and reference.n_images == 12


def test_probe_results_feed_the_uncertain_feature(reference):
    masks = _labels(1)
    uncertain = masks.areas() // 2
    signals = image_signals(masks, masks, ProbeResults(uncertain, masks.areas()), reference)
    assert np.allclose(signals.feature("uncertain"), 0.5, atol=0.01)
    assert torch.is_tensor(masks.masks[0])


def test_bones_of_one_kind_share_a_finding_ordered_by_predicted_dice(reference):
    from evaluator.qc.model import DiceModel

    masks = _labels(1)
    changes = {}
    for name in ("Capitate", "Hamate"):  # each shrunk to a sliver of itself: far below training's range
        (y0, x0, y1, x1), crop = _get(masks, name)
        h, w = crop.shape
        a, b, c, d = 3 * h // 8, 5 * h // 8, 3 * w // 8, 5 * w // 8  # the middle quarter of its box: all bone
        changes[name] = ((y0 + a, x0 + c, y0 + b, x0 + d), crop[a:b, c:d].clone())
    changes["finger-16"] = (None, None)
    masks = _replace(masks, changes)
    probes = ProbeResults(np.zeros(len(CLASSES), dtype=np.int64), masks.areas())
    signals = image_signals(masks, masks, probes, reference)
    model = DiceModel(("area",), np.array([0.05]), 0.01, np.array([0.0]))
    flag, findings = assess_findings(signals, model.bone_dice(signals), model)
    texts = [f.text for f in findings]
    assert flag and texts[0] == "finger-16 missing"  # predicted Dice 0 comes first
    small = next(f for f in findings if "small for the hand" in f.text)
    assert set(small.bones) == {"Capitate", "Hamate"} and small.text.startswith("Capitate, Hamate small for the hand")
