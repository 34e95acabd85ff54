"""RLE exactly as the competition: hand-worked strings, edge masks, round trips, and the vectorised encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from handseg.rle import rle_decode, rle_encode, rle_encode_many


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
