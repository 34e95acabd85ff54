"""Which tiles a cascade's stage 2 runs on: only near the bones stage 1 finds (pure functions).

A cascade's output is stage 1's logits plus stage 2's residual (:mod:`handseg.inference.box_blend`), so where stage
2 does not run the output is stage 1's, exactly: a skipped tile predicts what a tile whose residual is zero
predicts. Stage 2 runs on a tile when some cell of stage 1's low-resolution grid whose probability (the largest over
the classes) exceeds ``probability`` lies within ``margin`` native pixels of the tile (a square dilation of the
cells' footprints); the other tiles are skipped. The blend stays the full path's: a pixel covered by a skipped tile
and a run tile blends the skipped tile's prediction, stage 1's value, with the run tile's, with the same Gaussian
weights; a pixel that no run tile covers is stage 1's probability itself (:func:`uncovered_rects`).

``margin`` is chosen on the validation fold by ``scripts/tune_thresholds.py`` and stored with the thresholds; a
file without it uses :data:`DEFAULT_MARGIN`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from handseg.runtime.config_schema import FieldError

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1)
DEFAULT_MARGIN = 96  # native pixels: generous, for a thresholds file that did not choose one
MARGINS = (0, 16, 32, 48, 64, 96, 128, 192)  # the candidates threshold tuning compares


@dataclass(frozen=True)
class TileSelection:
    """Stage 2 runs on the tiles within ``margin`` native pixels of a stage-1 grid cell whose probability of some
    class exceeds ``probability`` (module docstring)."""

    probability: float = 0.5
    margin: int = DEFAULT_MARGIN

    def check(self) -> None:
        if not 0.0 < self.probability < 1.0:
            raise FieldError("probability", f"must be in (0, 1), got {self.probability}")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int) or self.margin < 0:
            raise FieldError("margin", f"must be an integer >= 0 (native pixels), got {self.margin!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TileSelection":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise FieldError(sorted(unknown)[0], "unknown tile_selection key")
        selection = cls(**data)
        selection.check()
        return selection


def bone_cells(prior: torch.Tensor, probability: float) -> torch.Tensor:
    """(h, w) bool: the cells of stage 1's logits ``prior`` (C, h, w) where some class's probability exceeds
    ``probability`` (compared in logit space)."""
    return prior.amax(dim=0) > math.log(probability / (1.0 - probability))


def _cell_span(start: int, stop: int, cells: int, size: int) -> tuple[int, int]:
    """The cells ``[first, last)`` of a grid of ``cells`` over ``size`` native pixels whose footprints (cell j
    covers ``[j * size / cells, (j + 1) * size / cells)``) meet the pixels ``[start, stop)``."""
    first = max(math.floor(start * cells / size), 0)
    last = min(math.ceil(stop * cells / size), cells)
    return first, max(last, first)


def selected_tiles(prior: torch.Tensor, image_hw: tuple[int, int], pad: tuple[int, int],
                   windows: list[tuple[int, int]], tile_hw: tuple[int, int], selection: TileSelection) -> list[int]:
    """Indices (ascending) of the ``windows`` (top-left corners in the padded image, tiles of ``tile_hw``) stage 2
    runs on, from stage 1's logits ``prior`` (C, h, w) over the image of ``image_hw`` padded by ``pad`` (top,
    left)."""
    cells = bone_cells(prior, selection.probability)
    if not bool(cells.any()):
        return []
    rows, cols = cells.any(dim=1).tolist(), cells.any(dim=0).tolist()
    (h, w), (top, left), (th, tw), m = image_hw, pad, tile_hw, selection.margin
    chosen = []
    for n, (ty, tx) in enumerate(windows):
        r0, r1 = _cell_span(ty - top - m, ty - top + th + m, cells.shape[0], h)
        c0, c1 = _cell_span(tx - left - m, tx - left + tw + m, cells.shape[1], w)
        if any(rows[r0:r1]) and any(cols[c0:c1]) and bool(cells[r0:r1, c0:c1].any()):
            chosen.append(n)
    return chosen


def uncovered_rects(windows: list[tuple[int, int]], ran: list[bool], tile_hw: tuple[int, int]) -> list[Box]:
    """The rectangles (y0, x0, y1, x1) of the padded image that no tile with ``ran[n]`` covers, one per row band
    of the tile grid and run of columns: where a cascade's output is stage 1's probability itself."""
    th, tw = tile_hw
    ys = sorted({y for y, _ in windows} | {y + th for y, _ in windows})
    xs = sorted({x for _, x in windows} | {x + tw for _, x in windows})
    run = [win for win, r in zip(windows, ran) if r]
    rects: list[Box] = []
    for y0, y1 in zip(ys[:-1], ys[1:]):
        band = [x for y, x in run if y <= y0 and y1 <= y + th]
        start = None
        for x0, x1 in zip(xs[:-1], xs[1:]):
            covered = any(x <= x0 and x1 <= x + tw for x in band)
            if not covered and start is None:
                start = x0
            if covered and start is not None:
                rects.append((y0, start, y1, x0))
                start = None
        if start is not None:
            rects.append((y0, start, y1, xs[-1]))
    return rects
