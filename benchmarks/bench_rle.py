"""Time the project's vectorised RLE encoder against the usual per-mask numpy encoder, and its scorer of RLE
strings against the decode-then-count baseline, in one run.

    python benchmarks/bench_rle.py [--size 2048] [--repeats 5] [--seed 0]

Masks: the 29 bone masks of one phantom hand when ``handseg.phantom`` is available, otherwise 29 filled
random polygons (smooth blobs the size of bones). Both encoders must give identical strings. Also timed, for
the inference path that holds only each class's box: ``rle_encode_boxes`` on the 29 masks cropped to their boxes.
Scoring (``scripts/score_submission.py``): ``dice_counts_rle`` on the 29 strings against the masks shifted by a few
pixels, against decoding every string to a full mask (the usual cumulative-sum decoder) and counting; both must
give identical counts.
"""

from __future__ import annotations

import time

import numpy as np

from handseg.format.classes import NUM_CLASSES
from handseg.format.metrics import dice_counts, dice_counts_rle
from handseg.format.rasterize import rasterize
from handseg.format.rle import rle_encode_boxes, rle_encode_many
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main


def baseline_rle_encode(mask: np.ndarray) -> str:
    """The usual competition notebook encoder, one (H, W) mask at a time."""
    pixels = mask.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def baseline_rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The usual decoder: a +1/-1 step per run start/end, a cumulative sum over the whole image."""
    values = np.array(rle.split(), dtype=np.int64)
    delta = np.zeros(shape[0] * shape[1] + 1, dtype=np.int32)
    np.add.at(delta, values[0::2] - 1, 1)
    np.add.at(delta, values[0::2] - 1 + values[1::2], -1)
    return (np.cumsum(delta[:-1]) > 0).astype(np.uint8).reshape(shape)


def synthetic_polygons(size: int, seed: int) -> list[np.ndarray]:
    """29 smooth star-shaped blobs, bone-sized (2-10% of the image side), as (N, 2) int32 (x, y)."""
    rng = np.random.default_rng(seed)
    polys = []
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    for _ in range(NUM_CLASSES):
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        rx, ry = rng.uniform(0.02, 0.10, 2) * size
        wobble = 1 + 0.15 * np.sin(3 * t + rng.uniform(0, 2 * np.pi))
        ang = rng.uniform(0, np.pi)
        x, y = rx * wobble * np.cos(t), ry * wobble * np.sin(t)
        xr, yr = cx + x * np.cos(ang) - y * np.sin(ang), cy + x * np.sin(ang) + y * np.cos(ang)
        polys.append(np.stack([xr, yr], 1).round().clip(0, size - 1).astype(np.int32))
    return polys


def make_masks(size: int, seed: int) -> tuple[np.ndarray, str]:
    """(29, size, size) bool masks and where they came from."""
    try:
        from handseg.format.classes import CLASSES
        from handseg.phantom import render_hand

        _, polygons = render_hand(seed, size, "R")
        polys = [polygons[c] for c in CLASSES]
        source = "phantom hand"
    except ImportError:
        polys = synthetic_polygons(size, seed)
        source = "synthetic polygons (handseg.phantom not available)"
    return rasterize(polys, (size, size)).astype(bool), source


def crop_to_boxes(masks: np.ndarray) -> list[tuple[int, int, np.ndarray] | None]:
    """Each (H, W) mask as (y0, x0, contiguous crop to its bounding box), or None when empty."""
    items = []
    for m in masks:
        ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if ys.size == 0:
            items.append(None)
            continue
        items.append((int(ys[0]), int(xs[0]), np.ascontiguousarray(m[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1])))
    return items


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    masks, source = make_masks(args.size, args.seed)
    ours_s, ours = best_time(lambda: rle_encode_many(masks), args.repeats)
    base_s, base = best_time(lambda: [baseline_rle_encode(m) for m in masks], args.repeats)
    boxes = crop_to_boxes(masks)
    boxes_s, from_boxes = best_time(lambda: rle_encode_boxes(boxes, args.size, args.size), args.repeats)
    for name, got in (("rle_encode_many", ours), ("rle_encode_boxes", from_boxes)):
        if got != base:
            bad = [i for i, (a, b) in enumerate(zip(got, base)) if a != b]
            raise SystemExit(f"{name} and the baseline disagree on channels {bad}")
    runs = sum(len(s.split()) // 2 for s in ours)
    print(f"masks: {masks.shape[0]} x {args.size}x{args.size} from {source}, {masks.mean():.2%} foreground, "
          f"{runs} runs")
    print(f"identical strings: yes (best of {args.repeats})")
    print(f"project rle_encode_many : {ours_s * 1e3:8.1f} ms per image")
    print(f"per-mask numpy baseline : {base_s * 1e3:8.1f} ms per image")
    print(f"speed-up                : {base_s / ours_s:8.2f}x")
    print(f"rle_encode_boxes, crops : {boxes_s * 1e3:8.1f} ms per image (masks held only inside their boxes)")

    target = np.roll(masks, (3, -2), axis=(1, 2)).astype(np.uint8)  # a prediction a few pixels off
    hw = (args.size, args.size)
    score_s, counts = best_time(lambda: dice_counts_rle(ours, target), args.repeats)
    decode_s, decoded = best_time(lambda: dice_counts(np.stack([baseline_rle_decode(s, hw) for s in ours]), target),
                                  args.repeats)
    if not np.array_equal(counts, decoded):
        raise SystemExit("dice_counts_rle and decode-then-count disagree")
    print(f"project dice_counts_rle : {score_s * 1e3:8.1f} ms per image (29 strings scored, identical counts)")
    print(f"decode, then count      : {decode_s * 1e3:8.1f} ms per image")
    print(f"speed-up                : {decode_s / score_s:8.2f}x")


if __name__ == "__main__":
    main()
