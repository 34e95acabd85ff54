"""Tile mode: which tiles run, their inputs, the engine over them in batches, and the full-map blend of their outputs.

A cascade's stage 2 runs only on the tiles :mod:`handseg.inference.tile_selection` chooses; each tile run is
normalised on its own and given stage 1's probabilities over it (29 more input channels), so preprocessing costs
per tile run and no full-size input is made; the logits are written in place as the batches come back.
:func:`dense_probs` is the full-map reference the per-box path (:mod:`handseg.inference.box_blend`) reproduces: a
tile stage 2 skipped blends in stage 1's value, and where no run tile covers the image the output is stage 1's
probability itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from handseg.inference.box_blend import ModelOutputs, prior_region
from handseg.inference.engine import Engine
from handseg.inference.phase_timer import PhaseTimer, phase
from handseg.inference.tile_selection import TileSelection, selected_tiles
from handseg.inference.tiling import pad_amounts, tile_windows
from handseg.model.intensity import intensity_map
from handseg.model.io import InputSpec, to_pixel_values, upsample_logits


class TileSettings(Protocol):
    """What tile mode reads of :class:`handseg.inference.settings.InferenceSettings`."""

    input: InputSpec
    batch_size: int
    flip_tta: bool
    selection: TileSelection | None


@dataclass
class Tiling:
    """Where one image's tiles lie: the uint8 image padded up to a tile (``padded``), every tile's top-left corner
    in it (``windows``), those stage 2 runs on (``run``, ascending indices), the image's size and padding."""

    padded: np.ndarray
    windows: list[tuple[int, int]]
    run: list[int]
    image_hw: tuple[int, int]
    pad: tuple[int, int]
    lut: np.ndarray | None = None  # (256,) the whole image's intensity standardisation (None: / 255)


def tiles_to_run(image: np.ndarray, prior: torch.Tensor | None, settings: TileSettings) -> Tiling:
    """Where the tiles of ``image`` (H, W) uint8 lie and which run: all, or for a cascade with a selection those
    near the bones stage 1's logits ``prior`` (C, h', w') show. The input spec's intensity standardisation is
    fitted to the whole image here (its lookup table goes with the tiling)."""
    (h, w), tile = image.shape, settings.input.tile_size
    (top, bottom), (left, right) = pad_amounts(h, tile), pad_amounts(w, tile)
    fitted = intensity_map(image, settings.input.intensity)  # fitted to the whole image, before padding and tiling
    padded = fitted.image
    if top + bottom + left + right:
        padded = np.pad(padded, ((top, bottom), (left, right)))
    windows = tile_windows(*padded.shape, tile, settings.input.overlap)
    run = list(range(len(windows)))
    if prior is not None and settings.selection is not None:  # stage 2 only near the bones stage 1 finds
        run = selected_tiles(prior, (h, w), (top, left), windows, (tile, tile), settings.selection)
    return Tiling(padded, windows, run, (h, w), (top, left), fitted.lut)


def rows_of(run: list[int], count: int) -> list[int | None]:
    """For each of ``count`` windows, its row among the ``run`` ones (None: not run)."""
    rows: list[int | None] = [None] * count
    for k, n in enumerate(run):
        rows[n] = k
    return rows


def run_tile_batches(engine: Engine, tiling: Tiling, prior: torch.Tensor | None, settings: TileSettings,
                      device: torch.device, timer: PhaseTimer | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The engine's logits (N, C, h, w) of the tiles ``tiling.run`` (and of their mirrors under flip TTA), in
    batches of ``settings.batch_size``. Each tile is normalised on its own, and a cascade's stage-1 probabilities
    are resampled over it alone: preprocessing costs per tile run, and no full-size intermediate is made."""
    tile, spec = settings.input.tile_size, settings.input
    (top, left), (h, w) = tiling.pad, tiling.image_hw
    with phase(timer, "preprocess"):
        prior_probs = None if prior is None else torch.sigmoid(prior)  # upsampled as probabilities, as in training
        # One input buffer for every batch: a fresh one per batch costs its page faults each time.
        channels = 3 if prior is None else 3 + prior.shape[0]
        buffer = torch.empty((min(settings.batch_size, max(len(tiling.run), 1)), channels, tile, tile),
                             device=device)
    plain = flipped = None  # every tile's logits, written in place as the batches come (no list to concatenate)
    for start in range(0, len(tiling.run), settings.batch_size):
        batch = [tiling.windows[n] for n in tiling.run[start:start + settings.batch_size]]
        with phase(timer, "preprocess"):
            tiles = buffer[:len(batch)]
            for j, (y, x0) in enumerate(batch):
                tiles[j, :3] = to_pixel_values(tiling.padded[y:y + tile, x0:x0 + tile], spec.mean, spec.std, device,
                                               tiling.lut)
                if prior_probs is not None:  # stage 1's probabilities over the tile: 29 more input channels
                    prior_region(prior_probs, (h, w), (top, left), (y, x0, y + tile, x0 + tile), 0.0,
                                 out=tiles[j, 3:])
            mirrored = tiles.flip(-1) if settings.flip_tta else None
        with phase(timer, "stage2"):
            logits = engine(tiles)
            if plain is None:
                plain = logits.new_empty((len(tiling.run), *logits.shape[1:]))
                flipped = None if mirrored is None else torch.empty_like(plain)
            plain[start:start + len(batch)] = logits
            if mirrored is not None:
                flipped[start:start + len(batch)] = engine(mirrored)
    if plain is None:  # stage 1 finds no bone: no tile runs (the logits' side does not matter then)
        return buffer.new_empty((0, prior.shape[0], *prior.shape[-2:])), None
    return plain, flipped


def _window_logits(out: ModelOutputs, grids: torch.Tensor, first: int, count: int) -> torch.Tensor:
    """(count, C, h, w) logits of the windows ``first .. first + count - 1`` from ``grids`` (``out.logits`` or
    ``out.flipped``); a tile stage 2 skipped has zero logits (its residual), as if it had run."""
    if out.rows is None:
        return grids[first:first + count]
    batch = grids.new_zeros((count, *grids.shape[1:]))
    for j in range(count):
        row = out.rows[first + j]
        if row is not None:
            batch[j] = grids[row]
    return batch


def dense_probs(out: ModelOutputs, batch_size: int = 4) -> torch.Tensor:
    """Sigmoid probabilities (C, H, W) float32 of the whole image from the model's outputs: every tile upsampled,
    blended, cropped (the reference the per-box path reproduces). A tile a cascade's stage 2 skipped blends in
    stage 1's value; where no run tile covers the image, the output is stage 1's probability itself."""
    if out.weight is None:  # resize mode: one input is the whole image
        probs = torch.sigmoid_(upsample_logits(out.logits[:1], out.window_hw)[0])
        if out.flipped is not None:
            probs.add_(torch.sigmoid_(upsample_logits(out.flipped, out.window_hw)[0])).mul_(0.5)
        return probs
    th, tw = out.window_hw
    n_classes = out.prior.shape[0] if out.prior is not None else out.logits.shape[1]
    device = out.logits.device
    probs = torch.zeros((n_classes, *out.padded_hw), dtype=out.accumulate, device=device)
    weight_sum = torch.zeros(out.padded_hw, dtype=out.accumulate, device=device)
    for start in range(0, len(out.windows), batch_size):
        windows = out.windows[start:start + batch_size]
        tile_logits = upsample_logits(_window_logits(out, out.logits, start, len(windows)), out.window_hw)
        prior = None
        if out.prior is not None:  # a cascade: the prior's logits over each tile are added to the tile's own
            prior = torch.stack([prior_region(out.prior, out.image_hw, out.pad, (y, x0, y + th, x0 + tw))
                                 for y, x0 in windows])
            tile_logits = tile_logits + prior
        tile_probs = torch.sigmoid(tile_logits)
        if out.flipped is not None:
            flipped = upsample_logits(_window_logits(out, out.flipped, start, len(windows)), out.window_hw).flip(-1)
            tile_probs.add_(torch.sigmoid(flipped if prior is None else flipped + prior)).mul_(0.5)
        tile_probs.mul_(out.weight)
        for j, (y, x0) in enumerate(windows):
            probs[:, y:y + th, x0:x0 + tw] += tile_probs[j].to(out.accumulate)
            weight_sum[y:y + th, x0:x0 + tw] += out.weight.to(out.accumulate)
    probs /= weight_sum
    del weight_sum
    (top, left), (h, w) = out.pad, out.image_hw
    probs = probs[:, top:top + h, left:left + w].to(torch.float32).contiguous()
    for y0, x0, y1, x1 in out.uncovered:  # no run tile here: stage 1's probability itself
        iy0, ix0, iy1, ix1 = max(y0 - top, 0), max(x0 - left, 0), min(y1 - top, h), min(x1 - left, w)
        if iy0 < iy1 and ix0 < ix1:
            region = prior_region(out.prior, out.image_hw, out.pad, (iy0 + top, ix0 + left, iy1 + top, ix1 + left))
            probs[:, iy0:iy1, ix0:ix1] = torch.sigmoid(region)
    return probs
