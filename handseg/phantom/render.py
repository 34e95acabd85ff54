"""X-ray rendering of a phantom hand: bone attenuation, soft tissue, metal, then detector effects.

Each bone is a hollow elliptic cylinder seen side-on: the projected path through its cortex and medulla is
computed from the distance to the bone's edge (a distance transform of its filled integer polygon), so the
cortex is brighter than the medulla and overlapping bones add up. Soft tissue and metal add their own
attenuation; the sum goes through the exponential detector response, then gamma / contrast, blur, noise
and quantisation. Everything is computed at the target size with vectorised numpy / OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from handseg.format.classes import CARPALS, CLASSES
from handseg.phantom.anatomy import STRONG_BEND_DEG, Person, Skeleton, build_skeleton, sample_person, sample_pose
from handseg.phantom.extras import metal_layer
from handseg.phantom.failures import Failure
from handseg.phantom.placement import Frame, sample_frame, to_annotation_polygon
from handseg.phantom.soft_tissue import soft_tissue_mm

MU_SOFT = 0.09  # attenuation of 1 mm of soft tissue relative to 1 mm of cortical bone
MU_MEDULLA = {"long": 0.36, "carpal": 0.45, "forearm": 0.36}


@dataclass
class RenderedHand:
    """One rendered image with its exact labels and what was drawn into it."""

    image: np.ndarray  # (H, W) uint8
    polygons: dict[str, np.ndarray]  # label -> (N, 2) int32 (x, y), CLASSES order
    info: dict


def _kind(name: str) -> str:
    if name in CARPALS:
        return "carpal"
    return "forearm" if name in ("Radius", "Ulna") else "long"


def bone_attenuation(
    polygon: np.ndarray, size: int, half_width_px: float, cortex: float, mu_medulla: float
) -> tuple[tuple[int, int], np.ndarray]:
    """Projected attenuation of one bone (px of cortex-equivalent path) on its bounding box.

    Args:
        polygon: (N, 2) int32 outline in image pixels (the annotation polygon).
        half_width_px: radius of the cylinder the bone is modelled as.
        cortex: cortical thickness as a fraction of that radius.
    Returns:
        ((x0, y0), crop (h, w) float32): the crop's top-left corner in the image and its attenuation.
    """
    x0, y0 = np.maximum(polygon.min(axis=0) - 1, 0)
    x1, y1 = np.minimum(polygon.max(axis=0) + 2, size)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [(polygon - [x0, y0]).reshape(-1, 1, 2)], 1)
    # Where the bone runs out of the image, pretend it continues: no fake edge along the border.
    pad = int(np.ceil(half_width_px)) + 2
    edges = (pad if y0 == 0 else 0, pad if y1 == size else 0, pad if x0 == 0 else 0, pad if x1 == size else 0)
    padded = cv2.copyMakeBorder(mask, *edges, cv2.BORDER_REPLICATE) if any(edges) else mask
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)
    dist = dist[edges[0] : edges[0] + mask.shape[0], edges[2] : edges[2] + mask.shape[1]]
    radius = max(half_width_px, 0.75)
    inner = radius * (1.0 - cortex)
    u = radius - np.minimum(np.maximum(dist - 0.5, 0.0), radius)  # distance from the cylinder's axis
    u2 = u * u
    outer_path = 2.0 * np.sqrt(np.maximum(radius * radius - u2, 0.0))
    inner_path = 2.0 * np.sqrt(np.maximum(inner * inner - u2, 0.0))
    att = (outer_path - inner_path) + mu_medulla * inner_path
    att = np.where(mask > 0, np.maximum(att, 0.35 * radius), 0.0)  # edge pixels still count as bone
    return (int(x0), int(y0)), att.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """(size, size) float32 smooth noise of about unit variance with features ``cell`` px across."""
    n = max(2, size // cell + 2)
    coarse = rng.standard_normal((n, n)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _detector(attenuation: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    """Attenuation (mm of bone-equivalent) -> (H, W) uint8 through exposure, background, gamma, blur, noise.

    All steps work in place on float32 (H, W) buffers: this is the hot path of a 2048 px render.
    """
    exposure = rng.uniform(0.11, 0.16)
    img = np.multiply(attenuation, np.float32(-exposure), dtype=np.float32)
    np.exp(img, out=img)  # transmitted fraction
    ramp = np.arange(size, dtype=np.float32) / np.float32(size) - np.float32(0.5)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    slope = rng.uniform(0.0, 0.08)
    background = (np.float32(rng.uniform(0.02, 0.12)) + np.float32(slope * np.cos(theta)) * ramp[None, :]
                  + np.float32(slope * np.sin(theta)) * ramp[:, None])
    # image = background + (1 - background) * (1 - transmitted) = 1 - (1 - background) * transmitted
    img *= background - np.float32(1.0)
    img += np.float32(1.0)
    gamma = rng.uniform(0.8, 1.25)
    contrast = rng.uniform(0.9, 1.15)
    np.clip(img, 0.0, 1.0, out=img)
    cv2.pow(img, gamma, img)
    img *= np.float32(contrast)
    img += np.float32(0.5 - 0.5 * contrast + rng.uniform(-0.04, 0.04))
    blur = rng.uniform(0.4, 1.0) * size / 1024
    if blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise_sd = rng.uniform(0.006, 0.02)
    noise = rng.standard_normal((size, size), dtype=np.float32)
    level = cv2.sqrt(np.clip(img, 0.0, 1.0))
    level += np.float32(0.5)
    level *= noise
    img += np.float32(noise_sd) * level
    img *= np.float32(255.0)
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8), {"gamma": round(gamma, 3), "blur_px": round(blur, 3), "noise_sd": round(noise_sd, 4)}


def render(rng: np.random.Generator, size: int, side: str, person: Person, bent: bool | None = None,
           failure: Failure | None = None) -> RenderedHand:
    """Render one hand of ``person``: posture (``bent``: a strongly bent wrist, None: drawn, about one image in
    five), framing, bones, soft tissue, metal and detector from ``rng``. ``failure``: a failure case
    (:mod:`handseg.phantom.failures`; None, the default, is the plain phantom), recorded in ``info["failure"]``."""
    if side not in ("R", "L"):
        raise ValueError(f"side must be 'R' or 'L', got {side!r}")
    if size < 64:
        raise ValueError(f"image size must be at least 64 px, got {size}")
    if failure is not None:
        person = failure.person(person)
    pose = sample_pose(rng, bent)
    skeleton = build_skeleton(person, pose)
    hand = np.vstack([b for n, b in skeleton.bones.items() if n not in ("Radius", "Ulna")])
    wrist = np.array([0.0, -58.0]) * person.scale
    frame: Frame = sample_frame(rng, hand, wrist, size, side)
    if failure is not None:
        frame = failure.reframe(frame, skeleton, size)

    polygons = _annotation_polygons(skeleton, frame, size)
    bone = np.zeros((size, size), np.float32)
    for name in polygons:
        kind = _kind(name)
        cortex = person.cortex * (0.5 if kind == "carpal" else 0.8 if kind == "forearm" else 1.0)
        (x0, y0), att = bone_attenuation(
            polygons[name], size, skeleton.half_width[name] * frame.scale, cortex, MU_MEDULLA[kind]
        )
        h, w = att.shape
        bone[y0 : y0 + h, x0 : x0 + w] += att
    bone /= frame.scale  # px of path -> mm
    if failure is not None:
        failure.growth_plates(bone, skeleton, frame, polygons)
    texture = 1.0 + 0.06 * _smooth_noise(rng, size, max(4, size // 24)) + 0.05 * _smooth_noise(
        rng, size, max(2, size // 160)
    )
    soft = soft_tissue_mm(skeleton, frame, size, rng)
    metal, drawn = metal_layer(skeleton, frame, size, side, rng)
    attenuation = person.density * bone * texture + MU_SOFT * soft + metal
    extra = None
    if failure is not None:
        changed = failure.attenuation(attenuation, skeleton, frame)
        extra, attenuation = changed - attenuation, changed
    image, detector = _detector(attenuation, rng, size)
    info = {
        "side": side,
        "wrist_bend_deg": round(pose.wrist_bend, 2),
        "strongly_bent": abs(pose.wrist_bend) >= STRONG_BEND_DEG[0],
        "finger_spread_deg": round(pose.spread, 2),
        "px_per_mm": round(frame.scale, 4),
        "density": round(person.density, 3),
        **drawn,
        **detector,
    }
    if failure is not None:
        image, polygons, info["failure"] = failure.finish(image, polygons, extra, skeleton, frame)
    return RenderedHand(image=image, polygons=polygons, info=info)


def _annotation_polygons(skeleton: Skeleton, frame: Frame, size: int) -> dict[str, np.ndarray]:
    """The annotation polygon of every bone in the image, CLASSES order; a bone wholly outside the frame (only
    a failure case moves one there) has none."""
    polygons = {}
    for name in CLASSES:
        try:
            polygons[name] = to_annotation_polygon(frame.apply(skeleton.bones[name]), size)
        except ValueError:  # wholly outside the image
            continue
    return polygons


def render_hand(seed: int, size: int = 2048, side: str = "R") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one phantom hand X-ray, deterministic for ``seed``.

    Returns:
        image: (size, size) uint8 grayscale X-ray.
        polygons: label -> (N, 2) int32 (x, y) outline of each of the 29 bones, in CLASSES order.
    """
    rng = np.random.default_rng(seed)
    person = sample_person(rng, age=float(rng.uniform(20, 70)), sex=str(rng.choice(["M", "F"])),
                           height_cm=float(rng.normal(168.0, 8.0)))
    hand = render(rng, size, side, person)
    return hand.image, hand.polygons
