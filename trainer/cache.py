"""Decoded images and rasterised masks, built once and memory-mapped by every process and loader worker.

A training epoch must not re-decode PNGs or re-rasterise polygons. :class:`ImageCache` decodes every image
of a sample list once, at one resolution, into memory-mapped ``.npy`` files:

``<cache_dir>/<fingerprint>/<resolution>/``
    ``images.npy``  (N, H, W) uint8 — grayscale, resized with ``cv2.INTER_AREA`` (or native);
    ``masks.npy``   (N, H, W) uint32 — the 29 bone masks bit-packed (bit c = class c, see
    :func:`handseg.format.rasterize.pack_bits`), rasterised from the polygons *at this size* (never a resized
    native mask); absent when the samples have no annotations (test split);
    ``sizes.npy``   (N, 2) int32 — (h, w) of each image in the cache;
    ``areas.npy``   (N, 29) int64 — pixels per class;
    ``boxes.npy``   (N, 29, 4) int32 — per-class bounding box (y0, x0, y1, x1), end-exclusive, -1 when empty;
    ``meta.json``   — format version, fingerprint, resolution, the samples' relative paths, and the size of every
    file (with the sha256 of the small ones), written last.

``<fingerprint>`` is :func:`data_fingerprint` of the sample list (relative paths, file sizes and mtimes), so an
edited, added or removed file gives a new cache; ``<resolution>`` is ``r512`` for images resized to 512x512 or
``native``. At native resolution images of different sizes are zero-padded to the largest (H, W) of the set and
``sizes.npy`` keeps the true size; :meth:`ImageCache.image` and :meth:`ImageCache.mask` return the unpadded view.
One data set normally has one image size, so nothing is wasted in practice.

Integrity: an entry is used only when every file has the size ``meta.json`` recorded and the small files their
sha256 (the large arrays' sizes only: hashing gigabytes at every start would cost more than it protects). A
damaged entry (a truncated or deleted file, a disk that filled up, a copy cut short) is rebuilt with a one-line
notice on stderr, never half-read; a file that breaks after the check is a one-line DataFormatError when read.

Concurrency: the first process to arrive builds the cache into a temporary folder under a file lock and renames
it into place; others wait on the lock and then open the finished files read-only. Memory maps are opened lazily
in each process and never pickled, so a Dataset holding an ImageCache is cheap to send to loader workers.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock
from tqdm.auto import tqdm

from handseg.data.image_io import read_image_size
from handseg.format.classes import NUM_CLASSES
from handseg.format.rasterize import pack_bits
from handseg.runtime.atomic import atomic_folder
from handseg.runtime.errors import DataFormatError
from handseg.runtime.file_digest import file_record, file_sha256
from trainer.decoding import CACHE_VERSION, SampleLike, class_boxes, data_fingerprint, decode_sample, resolution_tag

LAYOUT_VERSION = 2  # the files of one cache entry (2: sizes and checksums in meta.json)
ARRAYS = ("images", "masks", "sizes", "areas", "boxes")
CHECKSUMMED = ("sizes", "areas", "boxes")  # small: hashed on every open


def _file_problem(path: Path, expected: dict) -> str | None:
    """What is wrong with one cache file against its record in meta.json (None: nothing found)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    want = expected.get("bytes")
    if size != want:
        return f"is truncated ({size} of {want} bytes)" if isinstance(want, int) and size < want else (
            f"has the wrong size ({size} bytes, {want} recorded)")
    if "sha256" in expected and file_sha256(path) != expected["sha256"]:
        return "is damaged (sha256 differs from the one recorded)"
    return None


class ImageCache:
    """Memory-mapped images (N, H, W) uint8 and bit-packed masks (N, H, W) uint32 at one resolution.

    Args:
        samples: the samples to cache, in the order of the cache's indices.
        cache_dir: root folder of all caches (e.g. ``.cache/handseg``).
        resolution: square side the images are resized to, or None for native resolution.
        progress: show a progress bar while building (pass False on all but the main process).
        num_threads: decoding threads while building (default: up to 4).
        require_all: every annotation must hold all 29 classes.
    """

    def __init__(
        self,
        samples: Sequence[SampleLike],
        cache_dir: str | os.PathLike,
        resolution: int | None = None,
        *,
        progress: bool = True,
        num_threads: int | None = None,
        require_all: bool = True,
    ):
        if resolution is not None and int(resolution) <= 0:
            raise ValueError(f"resolution must be positive or None, got {resolution}")
        if not samples:
            raise ValueError("cannot cache an empty sample list")
        self.samples = list(samples)
        self.resolution = None if resolution is None else int(resolution)
        self.fingerprint = data_fingerprint(self.samples)
        self.path = Path(cache_dir) / self.fingerprint / resolution_tag(self.resolution)
        self.built_now = False  # True when this instance built the files (False: found them)
        self._arrays: dict[str, np.ndarray] | None = None
        if self._problem() is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(self.path) + ".lock"):
                problem = self._problem()  # again: another process may have built it meanwhile
                if problem is not None:
                    if self.path.exists():
                        print(f"cache {self.path}: {problem}; rebuilding", file=sys.stderr, flush=True)
                    self._build(progress, num_threads or min(4, os.cpu_count() or 1), require_all)
                    self.built_now = True
        meta = json.loads((self.path / "meta.json").read_text())
        self.has_masks: bool = bool(meta["has_masks"])
        self.shape: tuple[int, int, int] = tuple(meta["shape"])  # (N, H, W) of the arrays (padded)

    # ----------------------------------------------------------------------------------------------- build
    def _problem(self) -> str | None:
        """Why the entry cannot be used as it is (None: complete and intact). Reads meta.json, the file sizes and the
        small files."""
        meta = self.path / "meta.json"
        if not meta.is_file():
            return "meta.json is missing"
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return "meta.json is unreadable"
        if data.get("version") != CACHE_VERSION or data.get("rels") != [s.rel for s in self.samples]:
            return "it was built for other samples"
        if data.get("layout") != LAYOUT_VERSION or not isinstance(data.get("files"), dict):
            return "it was written by an earlier version (no file sizes recorded)"
        for name, expected in data["files"].items():
            problem = _file_problem(self.path / name, expected if isinstance(expected, dict) else {})
            if problem is not None:
                return f"{name} {problem}"
        return None

    def _build(self, progress: bool, num_threads: int, require_all: bool) -> None:
        """Decode every sample into a new version of the entry and swap it in (the caller holds the lock); it
        replaces an incomplete or outdated entry."""
        n = len(self.samples)
        has_masks = all(s.label_path is not None for s in self.samples)
        if self.resolution is None:
            sizes = np.array([read_image_size(s.image_path) for s in self.samples], dtype=np.int32)
        else:
            sizes = np.full((n, 2), self.resolution, dtype=np.int32)
        H, W = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        payload = n * H * W * (5 if has_masks else 1)  # uint8 images and uint32 masks
        with atomic_folder(self.path, "the data cache", payload) as tmp:
            areas, boxes = self._decode_all(tmp, sizes, has_masks, progress, num_threads, require_all)
            np.save(tmp / "sizes.npy", sizes)
            np.save(tmp / "areas.npy", areas)
            np.save(tmp / "boxes.npy", boxes)
            meta = {
                "version": CACHE_VERSION,
                "layout": LAYOUT_VERSION,
                "fingerprint": self.fingerprint,
                "resolution": self.resolution,
                "shape": [n, H, W],
                "has_masks": has_masks,
                "rels": [s.rel for s in self.samples],
                "files": {f"{a}.npy": file_record(tmp / f"{a}.npy", a in CHECKSUMMED)
                          for a in ARRAYS if (tmp / f"{a}.npy").exists()},
            }
            (tmp / "meta.json").write_text(json.dumps(meta) + "\n")

    def _decode_all(self, folder: Path, sizes: np.ndarray, has_masks: bool, progress: bool, num_threads: int,
                    require_all: bool) -> tuple[np.ndarray, np.ndarray]:
        """Decode every sample into ``images.npy`` (and ``masks.npy``) memory maps in ``folder``, threads writing
        their own rows; returns per-class areas (N, 29) int64 and boxes (N, 29, 4) int32."""
        n, (H, W) = len(self.samples), (int(sizes[:, 0].max()), int(sizes[:, 1].max()))
        images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, H, W))
        masks = (np.lib.format.open_memmap(folder / "masks.npy", mode="w+", dtype=np.uint32, shape=(n, H, W))
                 if has_masks else None)
        areas = np.zeros((n, NUM_CLASSES), dtype=np.int64)
        boxes = np.full((n, NUM_CLASSES, 4), -1, dtype=np.int32)

        def work(i: int) -> None:
            # Each thread writes its own rows of the memory maps; cv2 and numpy release the GIL.
            image, m = decode_sample(self.samples[i], self.resolution, require_all)
            h, w = image.shape
            if (h, w) != tuple(sizes[i]):
                raise DataFormatError(self.samples[i].image_path, f"decoded size {w}x{h} differs from header")
            images[i, :h, :w] = image
            if masks is not None and m is not None:
                masks[i, :h, :w] = pack_bits(m)
                areas[i] = m.reshape(m.shape[0], -1).sum(axis=1, dtype=np.int64)
                boxes[i] = class_boxes(m)

        with tqdm(total=n, desc=f"caching {n} images ({resolution_tag(self.resolution)})", disable=not progress) as bar:
            with ThreadPoolExecutor(max_workers=num_threads) as pool:
                for _ in pool.map(work, range(n)):
                    bar.update(1)
        images.flush()
        if masks is not None:
            masks.flush()
        return areas, boxes  # the memory maps close here, before the folder is renamed

    # ----------------------------------------------------------------------------------------------- access
    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            arrays = {}
            for name in ARRAYS:
                if name == "masks" and not self.has_masks:
                    continue
                path = self.path / f"{name}.npy"
                try:
                    arrays[name] = np.load(path, mmap_mode="r" if name in ("images", "masks") else None)
                except (OSError, ValueError) as exc:  # damaged after the check at start-up
                    raise DataFormatError(path, f"damaged cache file ({' '.join(str(exc).split())[:120]}); delete "
                                                f"{self.path} to rebuild it") from None
            self._arrays = arrays
        return self._arrays

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # reopened lazily in the receiving process, never copied
        return state

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def sizes(self) -> np.ndarray:
        """(N, 2) int32 (h, w) of every cached image."""
        return self._open()["sizes"]

    @property
    def areas(self) -> np.ndarray:
        """(N, 29) int64 pixels of each class at this resolution."""
        return self._open()["areas"]

    @property
    def boxes(self) -> np.ndarray:
        """(N, 29, 4) int32 class bounding boxes (y0, x0, y1, x1), end-exclusive; -1 for an empty class."""
        return self._open()["boxes"]

    def size(self, i: int) -> tuple[int, int]:
        """(h, w) of image ``i``."""
        h, w = self.sizes[i]
        return int(h), int(w)

    def image(self, i: int) -> np.ndarray:
        """(h, w) uint8 read-only memory-mapped view of image ``i``."""
        h, w = self.size(i)
        return self._open()["images"][i, :h, :w]

    def mask(self, i: int) -> np.ndarray:
        """(h, w) uint32 read-only memory-mapped view of image ``i``'s bit-packed masks."""
        if not self.has_masks:
            raise ValueError(f"{self.path}: cache was built from samples without annotations")
        h, w = self.size(i)
        return self._open()["masks"][i, :h, :w]

    def index_of(self, rel: str) -> int:
        """Cache index of the sample with relative path ``rel``."""
        if not hasattr(self, "_rel_index"):
            self._rel_index = {s.rel: i for i, s in enumerate(self.samples)}
        return self._rel_index[rel]

    def __repr__(self) -> str:
        return f"ImageCache({len(self)} images, {resolution_tag(self.resolution)}, {self.path})"
