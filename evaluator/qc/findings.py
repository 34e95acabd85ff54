"""Flags and their reasons in words, from the QC signals and the predicted Dice.

An image is flagged when it has a hard finding (one a correct hand never shows) or its predicted Dice is below
the model's flag threshold. Hard findings: no hand; the hand upside down (its axis more than
:data:`UPSIDE_DOWN` degrees off training's); a finger chain cut by the frame; a bone missing; Radius and Ulna on
each other's side; a finger chain out of order; and, against training's range, a bone's area or position more
than :data:`Z_HARD` standard deviations off, a bone in pieces, or an overlap well beyond training's. Soft
findings name the bones with the lowest predicted Dice and the signal that lowers it most. The reason lists the
most severe findings (at most :data:`MAX_FINDINGS`), e.g. ``finger-16 missing``, ``Radius and Ulna swapped
sides``, ``uncertain carpals (Pisiform, Trapezoid)``, whole-hand findings first, then hard before soft, each
ordered by the lowest predicted Dice of the bones it names; each finding also records those bones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluator.qc.model import DiceModel
from evaluator.qc.signals import Z_FREE, ImageSignals, finite
from handseg.format.classes import ANATOMY, CLASS_TO_INDEX, CLASSES, RAYS, ray_bones

UPSIDE_DOWN = 90.0
Z_HARD = 6.0  # standard deviations of training's range beyond which an area or a position is a hard finding
PIECES_HARD = 0.25  # a bone whose largest piece holds less than 75% of it
OVERLAP_HARD = 0.25
NO_HAND = 20  # this many bones missing: no hand
MAX_FINDINGS = 3
SOFT_BELOW = 0.9  # soft findings name bones predicted below this Dice (or the lowest three)...
SOFT_MOST = 4  # ...at most this many
WORDS = {"uncertain": "uncertain {}", "stage_disagreement": "stages 1 and 2 disagree on {}",
         "flip_disagreement": "flip TTA disagrees on {}", "pieces": "{} in pieces", "area": "{} of unusual size",
         "position": "{} out of place", "overlap": "{} overlapping a neighbour"}


@dataclass(frozen=True)
class Finding:
    """One thing wrong: ``text`` in words, the ``bones`` it names (all 29 for the whole hand), ``severity`` to
    order by (hard findings above 1), ``hard``: flags the image by itself."""

    text: str
    bones: tuple[str, ...]
    severity: float
    hard: bool


def group_name(bones: list[str]) -> str:
    """Several bones in a word where they form a group (``carpals``, ``forearm``, ``index finger``), else listed."""
    groups = {ANATOMY[b].group for b in bones}
    rays = {ANATOMY[b].ray for b in bones}
    if len(bones) > 1 and groups == {"carpal"}:
        return f"carpals ({', '.join(bones)})"
    if len(bones) > 1 and len(rays) == 1 and None not in rays:
        ray = rays.pop()
        return f"{ray if ray == 'thumb' else ray + ' finger'} ({', '.join(bones)})"
    return ", ".join(bones)


def _missing(signals: ImageSignals) -> list[Finding]:
    missing = [c for c in range(len(CLASSES)) if not signals.present[c]]
    if len(missing) >= NO_HAND:
        return [Finding(f"no hand found ({len(missing)} of 29 bones missing)", CLASSES, 3.0, True)]
    out, explained = [], set()
    for ray in RAYS:
        chain = [CLASS_TO_INDEX[n] for n in ray_bones(ray)]
        tip = chain[:next((k for k, c in enumerate(chain) if signals.present[c]), len(chain))]
        rest = [c for c in chain if signals.present[c]]
        if tip and rest and signals.on_border[rest[0]]:
            names = [CLASSES[c] for c in tip]
            label = "thumb" if ray == "thumb" else f"{ray} finger"
            out.append(Finding(f"{label} cut by the frame ({listed(names)} missing)", tuple(names), 2.5, True))
            explained |= set(tip)
    rest = [CLASSES[c] for c in missing if c not in explained]
    if rest:
        out.append(Finding(f"{listed(rest)} missing", tuple(rest), 2.4, True))
    return out


def listed(bones: list[str], most: int = 4) -> str:
    """Bones by name, ``N bones (a, b, c, ...)`` beyond ``most``."""
    if len(bones) <= most:
        return ", ".join(bones)
    return f"{len(bones)} bones ({', '.join(bones[:most - 1])}, ...)"


def _hand(signals: ImageSignals) -> list[Finding]:
    """Findings about the hand as a whole and its chains: upside down, Radius and Ulna swapped, out of order."""
    out = []
    if finite(signals.angle_offset) and abs(signals.angle_offset) > UPSIDE_DOWN:
        out.append(Finding(f"hand upside down (axis {signals.angle_offset:+.0f} degrees off training's)", CLASSES,
                           2.9, True))
    if signals.swapped:
        out.append(Finding("Radius and Ulna swapped sides", ("Radius", "Ulna"), 2.3, True))
    for ray, a, b in signals.out_of_order:
        label = "thumb" if ray == "thumb" else f"{ray} finger"
        out.append(Finding(f"{CLASSES[a]} out of order in the {label}", (CLASSES[a], CLASSES[b]), 2.2, True))
    return out


def _bones(signals: ImageSignals) -> list[Finding]:
    """Bone-level findings against training's range, one per kind naming every bone it concerns: cut by the
    frame, small, large, out of place, in pieces, overlapping."""
    kinds: dict[str, list[tuple[str, str]]] = {}
    for c in np.flatnonzero(signals.present):
        name, ratio = CLASSES[c], signals.area_ratio[c]
        if signals.feature("area")[c] > Z_HARD - Z_FREE:
            kind = "cut" if ratio < 1 and signals.on_border[c] else "small" if ratio < 1 else "large"
            kinds.setdefault(kind, []).append((name, f"{ratio:.2f}x"))
        if signals.feature("position")[c] > Z_HARD - Z_FREE:
            kinds.setdefault("place", []).append((name, ""))
        if signals.feature("pieces")[c] > PIECES_HARD and signals.n_pieces[c] > 1:
            kinds.setdefault("pieces", []).append((name, f"{signals.n_pieces[c]}"))
        if signals.feature("overlap")[c] > OVERLAP_HARD and signals.overlap_with[c] >= 0:
            kinds.setdefault("overlap", []).append((name, CLASSES[signals.overlap_with[c]]))
    words = {"cut": "cut by the frame ({} its size)", "small": "small for the hand ({} training's)",
             "large": "large for the hand ({} training's)", "place": "out of place", "pieces": "in pieces ({})"}
    out = []
    for kind, items in kinds.items():
        names = [n for n, _ in items]
        if kind == "overlap":
            pairs = [f"{n} overlaps {other}" for n, other in items]
            out.append(Finding(", ".join(pairs), tuple(dict.fromkeys(names + [o for _, o in items])), 1.9, True))
        else:
            detail = ", ".join(v for _, v in items)
            out.append(Finding(f"{listed(names)} {words[kind].format(detail)}".replace(" ()", ""), tuple(names),
                               2.0, True))
    return out


def _soft(signals: ImageSignals, bone_dice: np.ndarray, model: DiceModel, named: set[str]) -> list[Finding]:
    """The bones predicted lowest (below :data:`SOFT_BELOW`, at least the lowest three present, at most
    :data:`SOFT_MOST`) that no hard finding names yet (``named``), grouped by the signal that lowers each most."""
    present = np.array([c for c in np.flatnonzero(signals.present) if CLASSES[c] not in named], dtype=int)
    order = present[np.argsort(bone_dice[present], kind="stable")]
    chosen = [c for c in order if bone_dice[c] < SOFT_BELOW] or list(order[:3])
    if not model.features:
        return []
    share = model.contributions(signals)
    by_word: dict[str, list[int]] = {}
    for c in chosen[:SOFT_MOST]:
        top = int(np.argmax(share[c]))
        word = model.features[top] if share[c, top] > 0 else "uncertain"
        by_word.setdefault(word, []).append(c)
    out = []
    for word, bones in by_word.items():
        names = [CLASSES[c] for c in bones]
        out.append(Finding(WORDS[word].format(group_name(names)), tuple(names),
                           float(1.0 - min(bone_dice[c] for c in bones)), False))
    return out


def assess_findings(signals: ImageSignals, bone_dice: np.ndarray | None,
                    model: DiceModel | None) -> tuple[bool, list[Finding]]:
    """(flag, the findings of the reason, most severe first): hard findings, then the soft ones of the lowest
    predicted bones (with a model), at most :data:`MAX_FINDINGS`; an unflagged image has no findings."""
    hard = _missing(signals) + _hand(signals) + _bones(signals)
    image_dice = None if bone_dice is None else float(bone_dice.mean())
    flag = bool(hard) or (image_dice is not None and model is not None and image_dice < model.flag_below)
    if not flag:
        return False, []
    soft = [] if bone_dice is None or model is None else _soft(signals, bone_dice, model, named_bones(hard))

    def rank(f: Finding) -> tuple:
        """Whole-hand findings first, then by the lowest predicted Dice of the bones named, then severity."""
        lowest = 1.0 if bone_dice is None else min(bone_dice[CLASS_TO_INDEX[b]] for b in f.bones)
        return (len(f.bones) < len(CLASSES), not f.hard, lowest, -f.severity)

    return True, sorted(hard + soft, key=rank)[:MAX_FINDINGS]


def reason_text(findings: list[Finding]) -> str:
    return "; ".join(f.text for f in findings)


def named_bones(findings: list[Finding]) -> set[str]:
    return {b for f in findings for b in f.bones}

