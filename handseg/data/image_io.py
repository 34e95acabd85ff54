"""Reading and writing the X-ray PNGs.

Every image enters the project as a (H, W) uint8 grayscale array: 3/4-channel PNGs are converted to gray,
16-bit PNGs are scaled to 8 bits. A missing, empty or undecodable file raises
:class:`~handseg.runtime.errors.DataFormatError` naming it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from handseg.runtime.atomic import atomic_write_bytes
from handseg.runtime.errors import DataFormatError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataFormatError(path, "file not found")
    if not path.is_file():
        raise DataFormatError(path, "not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(path, f"cannot read ({exc.strerror or exc})") from None
    if not data:
        raise DataFormatError(path, "empty file (0 bytes)")
    return data


def _to_gray_uint8(img: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/float -> (H, W) uint8."""
    if img.ndim == 3:
        channels = img.shape[2]
        if channels == 1:
            img = img[:, :, 0]
        elif channels == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif channels == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY)
        else:
            raise ValueError(f"unsupported number of channels: {channels}")
    if img.dtype == np.uint16:
        # 0..65535 -> 0..255, rounding to nearest (65535 / 257 = 255 exactly).
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {img.dtype}")
    return np.ascontiguousarray(img)


def _decode_quietly(buf: np.ndarray) -> np.ndarray | None:
    """cv2.imdecode without its warnings on stderr for broken files (we raise our own one-line error)."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    previous = log.getLogLevel() if log is not None else None
    try:
        if log is not None:
            log.setLogLevel(log.LOG_LEVEL_ERROR)
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    finally:
        if log is not None:
            log.setLogLevel(previous)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W) uint8 grayscale.

    Grayscale, gray+alpha, BGR and BGRA PNGs (8 or 16 bit) are accepted. Raises DataFormatError for a
    missing, empty, truncated or otherwise undecodable file.
    """
    path = Path(path)
    data = _read_bytes(path)
    buf = np.frombuffer(data, dtype=np.uint8)
    img = _decode_quietly(buf)
    if img is None or img.size == 0:
        kind = "PNG" if data.startswith(PNG_SIGNATURE) else "image"
        raise DataFormatError(path, f"corrupt or truncated {kind}: cannot decode")
    if data.startswith(PNG_SIGNATURE) and b"IEND" not in data[-64:]:
        # libpng may return a partially decoded image for a truncated file; refuse it.
        raise DataFormatError(path, "truncated PNG: no IEND chunk at the end of the file")
    try:
        return _to_gray_uint8(img)
    except ValueError as exc:
        raise DataFormatError(path, str(exc)) from None


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image, from the PNG header without decoding pixels (any other format: decoded)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(33)
    except OSError as exc:
        raise DataFormatError(path, f"cannot read ({exc.strerror or exc})") from None
    if not head:
        raise DataFormatError(path, "empty file (0 bytes)")
    if head.startswith(PNG_SIGNATURE):
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise DataFormatError(path, "corrupt PNG: missing IHDR header")
        width, height = struct.unpack(">II", head[16:24])
        if width == 0 or height == 0:
            raise DataFormatError(path, f"corrupt PNG: size {width}x{height}")
        return int(height), int(width)
    h, w = read_image(path).shape
    return h, w


def encode_png(array: np.ndarray, compression: int = 3) -> bytes:
    """Encode a (H, W) or (H, W, 3|4) uint8/uint16 array as PNG bytes (channels in BGR order, as cv2)."""
    if array.ndim not in (2, 3) or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot write array of shape {array.shape} and dtype {array.dtype} as PNG")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray, compression: int = 3) -> Path:
    """Write a (H, W) uint8 (or uint16, or (H, W, 3|4)) array as a PNG, atomically; returns the path."""
    return atomic_write_bytes(path, encode_png(array, compression))
