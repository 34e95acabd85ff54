"""The phantom hand's skeleton: 29 bone outlines in millimetres for one person and one pose.

Anatomy frame (a right hand seen postero-anteriorly, as on the detector): x runs from the radial side (thumb,
negative) to the ulnar side (little finger, positive), y from proximal (forearm, negative) to distal (fingers,
positive); the origin is the centre of the capitate. Lengths and widths follow adult hand proportions
(metacarpal and phalanx lengths from anthropometric tables), which makes the little finger's distal phalanx
(finger-16), the trapezoid and the pisiform the smallest bones, as in real radiographs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from handseg.format.classes import RAYS, ray_bones
from handseg.phantom.shapes import blob_outline, chaikin, direction, long_bone_outline, place

# Per ray, from the wrist to the tip: (profile kind, length mm, widest width mm).
RAY_SPECS: dict[str, tuple[tuple[str, float, float], ...]] = {
    "thumb": (("metacarpal", 45.0, 11.0), ("phalanx", 31.0, 10.0), ("distal", 22.0, 8.6)),
    "index": (("metacarpal", 66.0, 9.2), ("phalanx", 40.0, 9.2), ("phalanx", 23.0, 7.8), ("distal", 17.0, 7.4)),
    "middle": (("metacarpal", 63.0, 9.6), ("phalanx", 44.0, 9.6), ("phalanx", 27.0, 8.2), ("distal", 18.0, 7.6)),
    "ring": (("metacarpal", 56.0, 8.8), ("phalanx", 41.0, 9.0), ("phalanx", 25.0, 7.8), ("distal", 17.5, 7.4)),
    "little": (("metacarpal", 51.0, 8.0), ("phalanx", 32.0, 8.0), ("phalanx", 19.0, 6.8), ("distal", 14.0, 5.5)),
}
# Metacarpal base position (mm) and axis angle (degrees from +y towards the ulnar side).
RAY_BASES: dict[str, tuple[float, float, float]] = {
    "thumb": (-25.5, 4.0, -36.0),
    "index": (-11.0, 10.5, -6.0),
    "middle": (0.5, 12.0, 0.0),
    "ring": (10.5, 10.0, 7.0),
    "little": (19.0, 6.0, 15.0),
}
# Carpals: centre (mm), radii (mm), rotation (deg), radial harmonics ((amp, phase) of k = 2, 3, 4), bend,
# squareness (2 = ellipse, more = boxier).
CARPAL_SPECS: dict[str, tuple[tuple[float, float], tuple[float, float], float, tuple, float, float]] = {
    "Trapezium": ((-20.6, -1.0), (6.6, 6.4), 25.0, ((0.03, 0.3), (0.03, 1.0), (0.05, 0.5)), 0.0, 2.7),
    "Trapezoid": ((-11.6, 3.8), (3.6, 4.6), -8.0, ((0.03, 0.0), (0.04, 0.7)), 0.0, 2.6),
    "Capitate": ((0.0, 0.0), (6.6, 10.8), 0.0, ((0.04, 0.0), (0.03, 1.2)), 0.0, 2.5),
    "Hamate": ((11.6, -1.2), (6.6, 9.0), 14.0, ((0.0, 0.0), (0.07, 1.57)), 0.0, 2.5),
    "Scaphoid": ((-13.0, -15.2), (5.8, 11.5), -52.0, ((0.03, 0.4),), 0.3, 2.2),
    "Lunate": ((0.8, -18.2), (7.6, 6.8), 0.0, ((0.05, 0.0), (0.05, 1.57)), 0.0, 2.4),
    "Triquetrum": ((12.4, -13.8), (6.2, 7.0), 30.0, ((0.04, 0.5), (0.04, 0.0)), 0.0, 2.4),
    "Pisiform": ((14.4, -15.4), (4.2, 4.0), 10.0, ((0.03, 0.0),), 0.0, 2.0),
}
PROXIMAL_ROW = ("Scaphoid", "Lunate", "Triquetrum", "Pisiform")
# Radius and ulna: control polygons (mm), smoothed by corner cutting; they run far past the image's edge.
RADIUS_CTRL = np.array([
    [-20.5, -400.0], [-20.5, -95.0], [-23.5, -58.0], [-25.5, -40.0], [-24.8, -30.0], [-23.2, -20.0],
    [-20.5, -21.5], [-12.0, -26.5], [-4.0, -28.5], [3.5, -30.0], [5.5, -34.5], [4.5, -41.0],
    [0.0, -60.0], [-5.0, -95.0], [-6.5, -400.0],
])
ULNA_CTRL = np.array([
    [8.5, -400.0], [8.5, -95.0], [7.5, -60.0], [8.0, -42.0], [9.5, -34.0], [13.0, -31.0], [17.5, -32.0],
    [19.5, -29.0], [21.0, -25.5], [23.0, -28.0], [22.8, -38.0], [20.0, -60.0], [19.0, -95.0], [19.0, -400.0],
])
WRIST_PIVOT = np.array([0.0, -19.0])
JOINT_GAP = 1.6  # mm of joint space between consecutive bones of a ray


@dataclass
class Person:
    """Per-person anatomy, shared by the right and left hand: size, proportions and bone density."""

    scale: float
    length_jitter: dict[str, float]
    width_jitter: dict[str, float]
    carpal_shift: dict[str, np.ndarray]
    density: float
    cortex: float


@dataclass
class Pose:
    """Per-image posture: wrist deviation, finger spread and flexion, thumb abduction, joint angles."""

    wrist_bend: float
    spread: float
    thumb_abduction: float
    thumb_flex: float
    flexion: dict[str, float]
    joint_noise: dict[str, np.ndarray]


@dataclass
class Skeleton:
    """Bone outlines (mm, anatomy frame) with what the renderer needs about each."""

    bones: dict[str, np.ndarray]
    half_width: dict[str, float]
    scale: float = 1.0  # the person's size factor (mm per canonical mm)
    rays: dict[str, np.ndarray] = field(default_factory=dict)  # (K, 2) joint centres, wrist -> fingertip
    ray_width: dict[str, float] = field(default_factory=dict)


def sample_person(rng: np.random.Generator, age: float, sex: str, height_cm: float) -> Person:
    """Draw a person's anatomy; taller people and men have larger hands, older people less dense bone."""
    scale = (height_cm / 170.0) * (1.03 if sex == "M" else 0.97) * rng.normal(1.0, 0.03)
    names = [n for ray in RAYS for n in ray_bones(ray)] + list(CARPAL_SPECS) + ["Radius", "Ulna"]
    length_jitter = {n: float(rng.normal(1.0, 0.03)) for n in names}
    width_jitter = {n: float(rng.normal(1.0, 0.03)) for n in names}
    carpal_shift = {n: rng.normal(0.0, 0.5, size=2) for n in CARPAL_SPECS}
    density = float(np.clip(rng.normal(1.08 - 0.005 * max(age - 30.0, 0.0), 0.08), 0.6, 1.3))
    cortex = float(np.clip(rng.normal(0.3, 0.04), 0.18, 0.42))
    return Person(scale, length_jitter, width_jitter, carpal_shift, density, cortex)


STRONG_BEND_DEG = (18.0, 30.0)  # radial or ulnar deviation of a "strongly bent" wrist


def sample_pose(rng: np.random.Generator, bent: bool | None = None) -> Pose:
    """Draw a posture. ``bent``: whether the wrist is strongly bent (18-30 degrees, either way); None draws it, about
    one image in five. The draw is made either way, so the rest of the posture does not depend on who decided."""
    draw = rng.random()
    if (draw < 0.2) if bent is None else bent:
        wrist_bend = float(rng.choice([-1.0, 1.0]) * rng.uniform(*STRONG_BEND_DEG))
    else:
        wrist_bend = float(np.clip(rng.normal(0.0, 5.0), -12.0, 12.0))
    flexion = {}
    for ray in RAYS[1:]:
        flexion[ray] = float(rng.uniform(25.0, 40.0) if rng.random() < 0.1 else abs(rng.normal(0.0, 8.0)))
    joint_noise = {ray: rng.normal(0.0, 2.0, size=4) for ray in RAYS}
    return Pose(
        wrist_bend=wrist_bend,
        spread=float(rng.uniform(0.0, 7.0)),
        thumb_abduction=float(rng.uniform(-8.0, 12.0)),
        thumb_flex=float(rng.uniform(-4.0, 14.0)),
        flexion=flexion,
        joint_noise=joint_noise,
    )


def _ray(ray: str, person: Person, pose: Pose) -> tuple[dict[str, np.ndarray], dict[str, float], np.ndarray]:
    """One ray's bone outlines (mm), half widths and joint centres, wrist -> tip, before the wrist bend."""
    names = ray_bones(ray)[::-1]  # metacarpal first
    bx, by, angle = RAY_BASES[ray]
    pos = np.array([bx, by]) * person.scale
    spread_unit = {"index": -1.2, "middle": 0.0, "ring": 1.0, "little": 2.0}
    if ray == "thumb":
        angle += pose.thumb_abduction
    bones, halves, joints = {}, {}, [pos.copy()]
    for j, (name, (kind, length, width)) in enumerate(zip(names, RAY_SPECS[ray])):
        if j == 1:  # metacarpo-phalangeal joint: fingers spread, thumb flexes towards the palm
            angle += pose.thumb_flex if ray == "thumb" else pose.spread * spread_unit[ray]
        angle += float(pose.joint_noise[ray][j]) * (0.4 if j == 0 else 1.0)
        length = length * person.scale * person.length_jitter[name]
        if kind != "metacarpal" and ray != "thumb":
            length *= np.cos(np.deg2rad(pose.flexion[ray]))  # a flexed finger looks shorter on the film
        width = width * person.scale * person.width_jitter[name]
        bones[name] = place(long_bone_outline(length, width, kind), pos, angle)
        halves[name] = 0.5 * width * (0.75 if kind == "metacarpal" else 0.8)
        pos = pos + direction(angle) * length
        joints.append(pos.copy())
        pos = pos + direction(angle) * JOINT_GAP * person.scale
    return bones, halves, np.array(joints)


def _carpals(person: Person) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    bones, halves = {}, {}
    for name, (centre, (rx, ry), rot, harmonics, bend, square) in CARPAL_SPECS.items():
        rx, ry = rx * person.width_jitter[name], ry * person.length_jitter[name]
        outline = blob_outline(rx, ry, harmonics, bend, square) * person.scale
        origin = (np.array(centre) + person.carpal_shift[name] * (0.3 if name == "Pisiform" else 1.0))
        bones[name] = place(outline, origin * person.scale, rot)
        halves[name] = 0.7 * min(rx, ry) * person.scale
    return bones, halves


def _rotate_about(points: np.ndarray, pivot: np.ndarray, deg: float) -> np.ndarray:
    return place(points - pivot, pivot, deg)


def build_skeleton(person: Person, pose: Pose) -> Skeleton:
    """All 29 bone outlines of a right hand in the anatomy frame (mm), wrist bend applied.

    The distal carpal row and the rays turn by the full wrist bend about the mid-carpal pivot, the proximal
    row by half of it (radial / ulnar deviation happens at both carpal joints).
    """
    bones, halves = _carpals(person)
    rays, ray_width = {}, {}
    for ray in RAYS:
        b, h, joints = _ray(ray, person, pose)
        bones.update(b)
        halves.update(h)
        rays[ray] = joints
        ray_width[ray] = RAY_SPECS[ray][1][2] * person.scale
    pivot = WRIST_PIVOT * person.scale
    for name in list(bones):
        share = 0.5 if name in PROXIMAL_ROW else 1.0
        bones[name] = _rotate_about(bones[name], pivot, pose.wrist_bend * share)
    for ray in RAYS:
        rays[ray] = _rotate_about(rays[ray], pivot, pose.wrist_bend)
    for name, ctrl, half in (("Radius", RADIUS_CTRL, 6.5), ("Ulna", ULNA_CTRL, 4.5)):
        pts = ctrl * np.array([person.width_jitter[name], 1.0]) * person.scale
        bones[name] = chaikin(pts, iterations=3, closed=True)
        halves[name] = half * person.scale
    return Skeleton(bones=bones, half_width=halves, scale=person.scale, rays=rays, ray_width=ray_width)
