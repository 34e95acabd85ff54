"""RLE exactly as the competition: hand-worked strings, edge masks, round trips, the vectorised encoder and the
encoder of masks held only inside boxes (numpy and torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handseg.format.rle import rle_decode, rle_encode, rle_encode_boxes, rle_encode_many, rle_pixels, rle_runs_boxes


def reference_encode(mask: np.ndarray) -> str:
    """Pixel by pixel, row by row: the definition, written as plainly as possible."""
    out, start, length = [], None, 0
    for i, v in enumerate(np.asarray(mask).reshape(-1).tolist(), start=1):
        if v:
            if start is None:
                start, length = i, 0
            length += 1
        elif start is not None:
            out += [start, length]
            start = None
    if start is not None:
        out += [start, length]
    return " ".join(map(str, out))


HAND_WORKED = [
    # mask rows, expected string (1-based starts, row-major, "start length" pairs)
    ([[0, 1, 1], [1, 0, 1]], "2 3 6 1"),  # flat 0 1 1 1 0 1: a run crossing the row end
    ([[0, 0], [1, 0]], "3 1"),  # row-major: column-major would give "2 1"
    ([[1, 0], [0, 1]], "1 1 4 1"),
    ([[1, 1], [1, 1]], "1 4"),
    ([[0, 0, 0], [0, 0, 0]], ""),
    ([[0, 0, 0], [0, 0, 1]], "6 1"),
    ([[1, 0, 0, 0]], "1 1"),
    ([[0, 1, 1, 0, 1, 1, 1, 0, 0, 1]], "2 2 5 3 10 1"),
]


@pytest.mark.parametrize("rows, expected", HAND_WORKED)
def test_hand_worked_examples(rows, expected):
    mask = np.array(rows, dtype=np.uint8)
    assert rle_encode(mask) == expected
    assert rle_encode_many(mask[None]) == [expected]
    np.testing.assert_array_equal(rle_decode(expected, mask.shape), mask)


def edge_masks(h: int, w: int) -> np.ndarray:
    """(6, h, w) bool: empty, full, single middle pixel, first pixel, last pixel, last row + first pixel."""
    m = np.zeros((6, h, w), dtype=bool)
    m[1] = True
    m[2, h // 2, w // 2] = True
    m[3, 0, 0] = True
    m[4, -1, -1] = True
    m[5, -1, :] = True
    m[5, 0, 0] = True
    return m


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (3, 3), (7, 5), (8, 8), (64, 64), (48, 40)])
def test_edge_masks(shape):
    h, w = shape
    masks = edge_masks(h, w)
    got = rle_encode_many(masks)
    assert got == [reference_encode(m) for m in masks]
    assert got[0] == "" and got[1] == f"1 {h * w}"
    assert got[3] == "1 1" and got[4] == f"{h * w} 1"
    for m, s in zip(masks, got):
        np.testing.assert_array_equal(rle_decode(s, shape), m.astype(np.uint8))


def test_runs_touching_channel_edges():
    # Channel 0 ends with a 1 and channel 1 starts with one: the stacked stream shows no change there.
    masks = np.zeros((3, 4, 4), dtype=np.uint8)
    masks[0, 3, 2:] = 1
    masks[1, 0, :3] = 1
    masks[2] = 1
    assert rle_encode_many(masks) == ["15 2", "1 3", "1 16"]


@pytest.mark.parametrize("shape", [(5, 7), (16, 16), (64, 64), (33, 64)])
@pytest.mark.parametrize("density", [0.001, 0.05, 0.5, 0.97])
def test_random_round_trip(shape, density):
    rng = np.random.default_rng(int(density * 1000) + shape[0])
    masks = rng.random((5, *shape)) < density
    got = rle_encode_many(masks)
    assert got == [reference_encode(m) for m in masks]
    for m, s in zip(masks, got):
        np.testing.assert_array_equal(rle_decode(s, shape), m.astype(np.uint8))
        assert rle_encode(m) == s


def test_smooth_shapes_match_reference_on_a_large_stack():
    yy, xx = np.mgrid[:256, :256]
    masks = np.stack([((xx - 40 * k) ** 2 + (yy - 128) ** 2 < (10 + 5 * k) ** 2) for k in range(1, 7)])
    assert rle_encode_many(masks) == [reference_encode(m) for m in masks]


def test_dtypes_and_torch():
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2, 3:6] = 255
    mask[5, 7] = 7
    expected = "20 3 48 1"
    assert rle_encode(mask) == expected
    assert rle_encode(mask.astype(np.float32)) == expected
    assert rle_encode(torch.from_numpy(mask) > 0) == expected
    assert rle_encode_many(torch.from_numpy(mask)[None].bool()) == [expected]
    assert rle_encode_many(np.zeros((0, 4, 4), bool)) == []


def test_encoder_rejects_wrong_rank():
    with pytest.raises(ValueError):
        rle_encode(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        rle_encode_many(np.zeros((2, 2)))


@pytest.mark.parametrize(
    "rle, message",
    [("1 2 3", "odd"), ("0 2", "below 1"), ("1 -1", "negative"), ("5 3", "past the"), ("1 x", "not an integer")],
)
def test_decoder_rejects_malformed(rle, message):
    with pytest.raises(ValueError, match=message):
        rle_decode(rle, (2, 3))


def test_decoder_accepts_whitespace_and_empty():
    np.testing.assert_array_equal(rle_decode("  2 2 \n", (2, 2)), [[0, 1], [1, 0]])
    assert rle_decode("", (3, 2)).sum() == 0


def test_encode_many_on_non_contiguous_and_odd_width_stacks():
    rng = np.random.default_rng(7)
    masks = rng.random((4, 24, 16)) < 0.3
    for view in (masks.transpose(0, 2, 1), masks[:, ::2, ::-1], masks[:, :, :13]):
        assert rle_encode_many(view) == [reference_encode(m) for m in view]


# --- masks held only inside boxes -------------------------------------------------------------------------------


def notebook_encode(mask: np.ndarray) -> str:
    """An independent vectorised encoder (the usual competition notebook one), fast enough for large masks."""
    pixels = np.concatenate([[0], np.asarray(mask, dtype=np.uint8).reshape(-1), [0]])
    runs = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs))


def dense(item, shape: tuple[int, int]) -> np.ndarray:
    """The full (H, W) bool mask of one box item."""
    out = np.zeros(shape, dtype=bool)
    if item is not None:
        y0, x0, mask = item
        mask = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        out[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask
    return out


def check_boxes(items, shape: tuple[int, int], exact_reference: bool = True) -> list[str]:
    """rle_encode_boxes and rle_runs_boxes against an independent encoder and decoder of the dense masks."""
    got = rle_encode_boxes(items, *shape)
    assert len(got) == len(items)
    runs = rle_runs_boxes(items, *shape)
    for item, s, (starts, lengths) in zip(items, got, runs):
        full = dense(item, shape)
        assert s == (reference_encode(full) if exact_reference else notebook_encode(full))
        assert s == rle_encode(full)
        np.testing.assert_array_equal(rle_decode(s, shape), full.astype(np.uint8))
        assert starts.dtype == lengths.dtype == np.int64
        np.testing.assert_array_equal(np.stack([starts, lengths], 1).ravel(), np.array(s.split(), dtype=np.int64))
    return got


AS_NUMPY = pytest.param(lambda m: m, id="numpy")
AS_TORCH = pytest.param(lambda m: torch.from_numpy(np.ascontiguousarray(m)), id="torch")
AS_TORCH_STRIDED = pytest.param(lambda m: torch.from_numpy(np.ascontiguousarray(m.T)).T, id="torch-transposed")
CONVERT = [AS_NUMPY, AS_TORCH, AS_TORCH_STRIDED]


@pytest.mark.parametrize("to", CONVERT)
def test_boxes_hand_worked(to):
    # 3x4 image; flat index (1-based) = 4 * row + col + 1
    one = np.ones((1, 1), bool)
    items = [
        None,
        (1, 1, to(np.array([[1, 1], [0, 1]], bool))),  # "6 2 11 1"
        (0, 0, to(np.ones((3, 4), bool))),  # the full image
        (1, 0, to(np.array([[0, 0, 1, 1], [1, 1, 0, 0]], bool))),  # a full-width run crossing a row end
        (0, 3, to(np.array([[1], [1], [1]], bool))),  # the last column: runs end at every row's last pixel
        (2, 3, to(one)),  # the last pixel of the image
        (0, 0, to(one)),  # the first pixel
        (1, 1, to(np.zeros((2, 3), bool))),  # a box without ones
    ]
    got = check_boxes(items, (3, 4))
    assert got == ["", "6 2 11 1", "1 12", "7 4", "4 1 8 1 12 1", "12 1", "1 1", ""]


def border_boxes(h: int, w: int, bh: int, bw: int) -> list[tuple[int, int]]:
    """(y0, x0) of bh x bw boxes at every corner and the middle of every border, and one inside."""
    ys, xs = (0, (h - bh) // 2, h - bh), (0, (w - bw) // 2, w - bw)
    return sorted({(y, x) for y in ys for x in xs})


@pytest.mark.parametrize("to", CONVERT)
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (5, 7), (16, 16), (13, 24)])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_random_boxes_at_every_border(to, shape, density):
    h, w = shape
    rng = np.random.default_rng(h * 100 + w + int(density * 10))
    items = []
    for bh, bw in {(1, 1), (h, w), (h, 1), (1, w), (max(h // 2, 1), max(w // 2, 1)), (h, max(w - 1, 1))}:
        for y0, x0 in border_boxes(h, w, bh, bw):
            items.append((y0, x0, to(rng.random((bh, bw)) < density)))
            items.append(None)
    check_boxes(items, shape)


@pytest.mark.parametrize("to", CONVERT)
def test_full_width_box_stitches_runs_across_rows(to):
    box = np.zeros((4, 6), bool)
    box[0, 4:] = box[1, :] = box[2, :2] = True  # one run over three rows
    box[2, 5] = box[3, 0] = True  # a second run: the last pixel of a row and the first of the next
    items = [(2, 0, to(box)), (2, 0, to(box[:, :5])), (2, 1, to(box[:, 1:]))]  # only the first is full width
    got = check_boxes(items, (6, 6))
    assert got[0] == "17 10 30 2"
    assert got[1] == "17 1 19 5 25 2 31 1"


@pytest.mark.parametrize("to", CONVERT)
def test_all_ones_and_empty_boxes(to):
    shape = (6, 5)
    items = [
        (0, 0, to(np.ones(shape, bool))),
        (2, 0, to(np.ones((4, 5), bool))),  # ends at the last pixel of the image
        (1, 1, to(np.ones((3, 3), bool))),
        (0, 0, to(np.zeros(shape, bool))),
        (3, 2, to(np.zeros((0, 2), bool))),
        (6, 5, to(np.zeros((0, 0), bool))),
        None,
    ]
    got = check_boxes(items, shape)
    assert got[:3] == ["1 30", "11 20", "7 3 12 3 17 3"]
    assert got[3:] == [""] * 4


def test_strided_and_non_bool_numpy_boxes():
    rng = np.random.default_rng(3)
    big = rng.random((20, 30)) < 0.4
    items = [
        (0, 0, big[::2, ::3]),  # (10, 10), strided
        (1, 2, big[:10, :12].T),  # (12, 10), transposed
        (0, 0, big[::-1, ::-1][:8]),  # negative strides, full width
        (3, 4, big[:5, :6].astype(np.uint8) * 255),  # nonzero = 1
    ]
    check_boxes(items, (20, 30))


def test_strided_and_non_bool_torch_boxes():
    rng = np.random.default_rng(4)
    big = torch.from_numpy(rng.random((20, 30)) < 0.4)
    items = [
        (0, 0, big[::2, ::3]),
        (1, 2, big[:10, :12].t()),
        (0, 0, big.flip(0)[:8]),
        (3, 4, big[:5, :6].to(torch.uint8) * 255),
        (2, 0, big[:3].numpy()[::-1]),  # a numpy mask, negative strides, among torch ones
    ]
    check_boxes(items, (20, 30))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_boxes_match_cpu_boxes():
    rng = np.random.default_rng(5)
    items = [(y0, x0, torch.from_numpy(rng.random((9, 17)) < 0.3)) for y0, x0 in border_boxes(20, 17, 9, 17)]
    cuda = [(y0, x0, m.cuda()) for y0, x0, m in items]
    assert rle_encode_boxes(cuda, 20, 17) == rle_encode_boxes(items, 20, 17)
    check_boxes(items, (20, 17))


@pytest.mark.parametrize("to", CONVERT)
def test_phantom_bones_in_tight_loose_and_full_width_boxes(to):
    from handseg.format.classes import CLASSES
    from handseg.format.rasterize import rasterize
    from handseg.phantom import render_hand

    size = 256
    _, polys = render_hand(2, size, "R")
    masks = rasterize([polys[c] for c in CLASSES], (size, size)).astype(bool)
    tight, loose, rows = [], [], []
    for m in masks:
        ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        tight.append((y0, x0, to(m[y0:y1, x0:x1])))
        y0, x0, y1, x1 = max(y0 - 3, 0), max(x0 - 5, 0), min(y1 + 4, size), min(x1 + 2, size)
        loose.append((y0, x0, to(m[y0:y1, x0:x1])))
        rows.append((ys[0], 0, to(m[ys[0] : ys[-1] + 1])))
    expected = [notebook_encode(m) for m in masks]
    for items in (tight, loose, rows):
        assert check_boxes(items, (size, size), exact_reference=False) == expected
    assert rle_encode_many(masks) == expected


def test_boxes_reject_masks_outside_the_image_and_wrong_rank():
    with pytest.raises(ValueError, match="item 1: box"):
        rle_encode_boxes([None, (3, 0, np.ones((2, 2), bool))], 4, 4)
    with pytest.raises(ValueError, match="not inside"):
        rle_encode_boxes([(0, -1, np.ones((2, 2), bool))], 4, 4)
    with pytest.raises(ValueError, match="not inside"):
        rle_encode_boxes([(0, 3, torch.ones(1, 2, dtype=torch.bool))], 4, 4)
    with pytest.raises(ValueError, match=r"\(h, w\)"):
        rle_encode_boxes([(0, 0, np.ones((1, 2, 2), bool))], 4, 4)
    assert rle_encode_boxes([], 4, 4) == [] and rle_runs_boxes([None], 4, 4)[0][0].dtype == np.int64


def test_rle_pixels_are_the_decoded_mask_even_for_unordered_overlapping_runs():
    # runs 5-7, 1-2, 6-9 (1-based) of a 3x4 image: the union, once each, sorted
    pixels = rle_pixels("5 3 1 2 6 4", (3, 4))
    np.testing.assert_array_equal(pixels, [0, 1, 4, 5, 6, 7, 8])
    np.testing.assert_array_equal(rle_decode("5 3 1 2 6 4", (3, 4)).ravel().nonzero()[0], pixels)
    rng = np.random.default_rng(3)
    mask = rng.random((37, 41)) < 0.3
    np.testing.assert_array_equal(rle_pixels(rle_encode(mask), mask.shape), np.flatnonzero(mask))
    assert rle_pixels("", (4, 4)).size == 0
