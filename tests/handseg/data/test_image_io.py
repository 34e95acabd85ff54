"""Image reading: grayscale conversion, 16-bit scaling, header-only size, and bad files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from handseg.runtime.errors import DataFormatError
from handseg.data.image_io import read_image, read_image_size, write_png


@pytest.fixture()
def gray() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (24, 40), dtype=np.uint8)


def test_grayscale_round_trip_and_header_size(tmp_path, gray):
    path = write_png(tmp_path / "sub" / "a.png", gray)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 40)
    np.testing.assert_array_equal(out, gray)
    assert read_image_size(path) == (24, 40)
    assert [p.name for p in path.parent.iterdir()] == ["a.png"]  # no temporary file left


def test_write_png_overwrites_atomically(tmp_path, gray):
    path = tmp_path / "a.png"
    write_png(path, gray)
    write_png(path, 255 - gray)
    np.testing.assert_array_equal(read_image(path), 255 - gray)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_three_and_four_channel_pngs_become_gray(tmp_path, gray):
    bgr = np.stack([gray, np.roll(gray, 1, 0), np.roll(gray, 1, 1)], axis=2)
    cv2.imwrite(str(tmp_path / "c3.png"), bgr)
    np.testing.assert_array_equal(read_image(tmp_path / "c3.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    rep = np.repeat(gray[:, :, None], 3, axis=2)  # the usual "RGB" X-ray: three equal channels
    cv2.imwrite(str(tmp_path / "rep.png"), rep)
    np.testing.assert_array_equal(read_image(tmp_path / "rep.png"), gray)
    bgra = np.concatenate([bgr, np.full_like(gray, 255)[:, :, None]], axis=2)
    cv2.imwrite(str(tmp_path / "c4.png"), bgra)
    out = read_image(tmp_path / "c4.png")
    assert out.shape == (24, 40) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert read_image_size(tmp_path / "c4.png") == (24, 40)


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    img16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # 0, 257, ..., 65535
    cv2.imwrite(str(tmp_path / "a16.png"), img16)
    out = read_image(tmp_path / "a16.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.arange(256, dtype=np.uint8).reshape(16, 16))


def test_non_png_image_is_read_and_sized(tmp_path, gray):
    cv2.imwrite(str(tmp_path / "a.bmp"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "a.bmp"), gray)
    assert read_image_size(tmp_path / "a.bmp") == (24, 40)


def test_missing_file(tmp_path):
    for fn in (read_image, read_image_size):
        with pytest.raises(DataFormatError, match="not found") as info:
            fn(tmp_path / "nope.png")
        assert "nope.png" in str(info.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    for fn in (read_image, read_image_size):
        with pytest.raises(DataFormatError, match="empty") as info:
            fn(tmp_path / "empty.png")
        assert "empty.png" in str(info.value)


def test_corrupt_and_truncated_png(tmp_path, gray):
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(1).bytes(500))
    with pytest.raises(DataFormatError, match="cannot decode"):
        read_image(tmp_path / "noise.png")
    with pytest.raises(DataFormatError, match="noise.png"):
        read_image_size(tmp_path / "noise.png")  # not a PNG signature: falls back to decoding

    path = write_png(tmp_path / "good.png", np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 6):
        (tmp_path / "cut.png").write_bytes(data[:cut])
        with pytest.raises(DataFormatError, match="truncated") as info:
            read_image(tmp_path / "cut.png")
        assert "cut.png" in str(info.value)
    (tmp_path / "head.png").write_bytes(data[:12])
    with pytest.raises(DataFormatError, match="IHDR"):
        read_image_size(tmp_path / "head.png")


def test_write_png_rejects_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "f.png", np.zeros((4, 4), dtype=np.float32))
    assert not list(tmp_path.iterdir())
