"""The 29 hand-bone classes in competition order, with their anatomy.

Every output of the project (mask channels, CSV rows, Dice tables) uses ``CLASSES`` order.
Fingers are numbered from the thumb, each ray from the tip towards the wrist:
1-3 thumb (distal phalanx, proximal phalanx, metacarpal), then four per finger
(distal, middle, proximal phalanx, metacarpal): index 4-7, middle 8-11, ring 12-15, little 16-19.
"""

from __future__ import annotations

from dataclasses import dataclass

CARPALS: tuple[str, ...] = (
    "Trapezium", "Trapezoid", "Capitate", "Hamate", "Scaphoid", "Lunate", "Triquetrum", "Pisiform",
)
FOREARM: tuple[str, ...] = ("Radius", "Ulna")
CLASSES: tuple[str, ...] = tuple(f"finger-{i}" for i in range(1, 20)) + CARPALS + FOREARM
NUM_CLASSES: int = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}
ID2LABEL: dict[int, str] = dict(enumerate(CLASSES))
LABEL2ID: dict[str, int] = dict(CLASS_TO_INDEX)

RAYS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "little")
_THUMB_PARTS = ("distal phalanx", "proximal phalanx", "metacarpal")
_FINGER_PARTS = ("distal phalanx", "middle phalanx", "proximal phalanx", "metacarpal")


@dataclass(frozen=True)
class Bone:
    """Anatomy of one class: ``group`` is finger/carpal/forearm; ``ray`` and ``part`` are set for finger bones."""

    name: str
    index: int
    group: str
    ray: str | None = None
    part: str | None = None


def _build_anatomy() -> dict[str, Bone]:
    bones: dict[str, Bone] = {}
    number = 1
    for ray in RAYS:
        for part in _THUMB_PARTS if ray == "thumb" else _FINGER_PARTS:
            name = f"finger-{number}"
            bones[name] = Bone(name, CLASS_TO_INDEX[name], "finger", ray, part)
            number += 1
    for name in CARPALS:
        bones[name] = Bone(name, CLASS_TO_INDEX[name], "carpal")
    for name in FOREARM:
        bones[name] = Bone(name, CLASS_TO_INDEX[name], "forearm")
    return bones


ANATOMY: dict[str, Bone] = _build_anatomy()


def ray_bones(ray: str) -> list[str]:
    """Class names of one ray (``"thumb"``, ``"index"``, ...), from the tip towards the wrist."""
    if ray not in RAYS:
        raise ValueError(f"unknown ray {ray!r}; expected one of {RAYS}")
    return [b.name for b in ANATOMY.values() if b.ray == ray]


def describe_bone(name: str) -> str:
    """A class in words: ``"index finger, distal phalanx"``, ``"thumb, metacarpal"``, ``"carpal"``, ``"forearm"``."""
    bone = ANATOMY[name]
    if bone.group != "finger":
        return bone.group
    return f"{bone.ray if bone.ray == 'thumb' else bone.ray + ' finger'}, {bone.part}"
