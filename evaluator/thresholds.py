"""Per-class thresholds that maximise mean validation Dice, optionally for a soft vote of several checkpoints.

For each validation image the (averaged) probabilities of every class are binned into ``bins`` equal bins; the
per-bin counts of all pixels and of ground-truth pixels give, for every candidate threshold k/bins, the exact
intersection and predicted area, hence the exact per-image Dice. Memory stays at one image's probabilities plus
(images x 29 x bins) counts, whatever the resolution; with one model, only each class's candidate box is blended
(:func:`box_histograms`). A second pass chooses the post-processing per class
(:mod:`handseg.inference.postprocess`: largest component, hole filling) on the masks at the tuned thresholds, kept only
where it raises validation Dice. The file also stores the reference of the hand normalisation
(:mod:`handseg.inference.hand_norm`) from the first member's whole-image pass (a cascade's stage 1) over the validation
images: the mean fraction of the image predicted as hand, the hands' mean axis and their spread about it. For a
cascade, it also chooses the margin of the tile selection (:mod:`handseg.inference.tile_selection`): the smallest
candidate whose masks, at the tuned thresholds and post-processing, score as running every tile does on the
validation fold (:func:`choose_selection`). With one checkpoint the model runs once per validation image, over
every tile: the outputs are kept in a temporary folder (:class:`OutputStore`) and the four steps read them (the
margins that keep the same tiles share one blend); a soft vote of several checkpoints runs its members in each
step. ``scripts/tune_thresholds.py`` is the command.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from evaluator.config import EvalConfig
from evaluator.engines import eval_settings, load_engine, load_eval_checkpoint
from handseg.data.image_io import read_image
from handseg.format.class_masks import ClassMasks
from handseg.format.classes import CLASSES
from handseg.format.metrics import DICE_EPS, dice_from_counts
from handseg.inference.box_blend import ModelOutputs
from handseg.inference.engine import Engine
from handseg.inference.hand_norm import HandNorm, angle_difference, hand_angle, hand_fraction
from handseg.inference.pipeline import (
    masks_from_outputs,
    predict_probs,
    run_model,
    threshold_probs,
    whole_image_logits,
)
from handseg.inference.postprocess import OPTIONS, choose, option_counts
from handseg.inference.scoring import ground_truth, ground_truth_masks
from handseg.inference.settings import InferenceSettings
from handseg.inference.tile_selection import MARGINS, TileSelection, selected_tiles
from handseg.model.checkpoint import LoadedCheckpoint

SELECTION_MEAN_DROP = 1e-4  # the tile selection may cost this much mean validation Dice against every tile ...
SELECTION_CLASS_DROP = 5e-4  # ... and this much of any class's


def histograms(probs: torch.Tensor, gt: torch.Tensor, bins: int) -> np.ndarray:
    """(29, 2, bins) int64 counts of one image: [all pixels, ground-truth pixels] per probability bin.

    probs (29, H, W) float in [0, 1]; gt (29, H, W) {0,1}. Bin k holds probabilities in [k/bins, (k+1)/bins).
    Classes are processed one at a time so the extra memory is one (H, W) index map.
    """
    out = np.zeros((probs.shape[0], 2, bins), dtype=np.int64)
    for c in range(probs.shape[0]):
        idx = (probs[c] * bins).long().clamp_(0, bins - 1)
        out[c, 0] = torch.bincount(idx.flatten(), minlength=bins).cpu().numpy()
        out[c, 1] = torch.bincount(idx[gt[c].bool()], minlength=bins).cpu().numpy()
    return out


def box_histograms(out: ModelOutputs, gt: torch.Tensor, bins: int) -> np.ndarray:
    """:func:`histograms` of one model's outputs without the (29, H, W) probabilities: each class is blended only
    inside its candidate box for the first bin's threshold ``1 / bins``, as deployment blends it
    (:func:`handseg.inference.pipeline.masks_from_outputs`); every pixel outside the box is below ``1 / bins``, so it
    counts in bin 0. The box blend equals the dense one to float rounding (a few 1e-7), so a pixel on a bin edge may
    count one bin over (the demo's thresholds file is byte-identical either way). ``gt`` (29, H, W) {0,1}."""
    h, w = out.image_hw
    out_counts = np.zeros((gt.shape[0], 2, bins), dtype=np.int64)
    out_counts[:, 0, 0] = h * w
    out_counts[:, 1, 0] = gt.reshape(gt.shape[0], -1).sum(1, dtype=torch.int64).cpu().numpy()

    def probe(c: int, box: tuple[int, int, int, int], probs: torch.Tensor) -> None:
        y0, x0, y1, x1 = box
        inside = histograms(probs[None], gt[c:c + 1, y0:y1, x0:x1], bins)[0]
        out_counts[c, :, 0] -= inside.sum(1)  # the box's pixels leave bin 0 for their own bins
        out_counts[c] += inside

    masks_from_outputs(out, 1.0 / bins, probe=probe)
    return out_counts


def dice_per_threshold(hists: np.ndarray) -> np.ndarray:
    """(N, 29, bins-1) per-image Dice for thresholds k/bins, k = 1..bins-1, from (N, 29, 2, bins) counts.

    A pixel is predicted at threshold k/bins iff its bin index is >= k (suffix sums).
    """
    suffix = np.flip(np.cumsum(np.flip(hists, -1), -1), -1)[..., 1:]  # (N, 29, 2, bins-1)
    pred_sum, inter = suffix[:, :, 0], suffix[:, :, 1]
    gt_sum = hists[:, :, 1].sum(-1, keepdims=True)
    return (2 * inter + DICE_EPS) / (pred_sum + gt_sum + DICE_EPS)


def best_thresholds(hists: np.ndarray, default: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds (29,), tuned Dice (29,), Dice at ``default`` (29,)): per class, the grid threshold with the
    best mean-over-images Dice; ties go to the threshold closest to ``default``."""
    bins = hists.shape[-1]
    grid = np.arange(1, bins) / bins
    mean = dice_per_threshold(hists).mean(0)  # (29, bins-1)
    closeness = -np.abs(grid - default)
    order = np.lexsort((np.broadcast_to(closeness, mean.shape), np.round(mean, 12)), axis=-1)
    best = order[:, -1]
    k_default = int(np.argmin(np.abs(grid - default)))
    rows = np.arange(mean.shape[0])
    return grid[best], mean[rows, best], mean[:, k_default]


def voters(cfg: EvalConfig, checkpoints: list[str], backend: str | None,
           file: str | Path = "<config>") -> list[tuple[Engine, InferenceSettings, LoadedCheckpoint]]:
    """(engine, settings, checkpoint) of each member of the soft vote (default: the config's checkpoint), each at
    its own input scale."""
    out = []
    for folder in checkpoints or [None]:
        member_cfg = cfg if folder is None else replace(cfg, checkpoint=Path(folder))
        member_cfg = replace(member_cfg, backend=backend or cfg.backend)
        ckpt = load_eval_checkpoint(member_cfg, file=file)
        engine = load_engine(member_cfg, ckpt)
        settings = eval_settings(member_cfg, ckpt, engine, hand_norm=False)
        # The default selection, not one a previous tuning stored: the result must not depend on an older file.
        out.append((engine, replace(settings, selection=TileSelection() if cfg.tile_selection else None), ckpt))
    return out


class OutputStore:
    """A single model's outputs over every tile of each validation image, computed once and kept in ``folder``:
    the thresholds, the post-processing, the hand reference and the tile selection all read them, so the model runs
    once per image instead of four times (a cascade's outputs: its stage-2 tiles at the logits' resolution and its
    stage 1's whole-image logits, about 47 MB per 2048 px image with 512 px tiles)."""

    def __init__(self, member: tuple[Engine, InferenceSettings, LoadedCheckpoint], device: str, folder: Path):
        self.engine, self.settings, _ckpt = member
        self.every = replace(self.settings, selection=None)
        self.device, self.folder = device, Path(folder)
        self._index: dict[str, int] = {}

    def outputs(self, sample) -> ModelOutputs:
        """The model's outputs over every tile of ``sample``'s image (run on first use, read back after)."""
        key = str(sample.image_path)
        path = self.folder / f"{self._index.setdefault(key, len(self._index))}.pt"
        if path.is_file():
            return torch.load(path, weights_only=False)  # written by this process a moment ago
        out = run_model(self.engine, read_image(sample.image_path), self.every, self.device)
        torch.save(out, path)
        return out

    def selected(self, sample) -> ModelOutputs:
        """The outputs as the model's own settings run it: a cascade's stage 2 on the tiles its selection keeps."""
        out = self.outputs(sample)
        if self.settings.selection is None or out.prior is None:
            return out
        return out.keep(selected_tiles(out.prior, out.image_hw, out.pad, out.windows, out.window_hw,
                                       self.settings.selection))


def voted_probs(sample, members, device: str) -> tuple[torch.Tensor, tuple]:
    """One image's soft-voted probabilities (29, H, W) (mean over the members) and the image's (H, W)."""
    image = read_image(sample.image_path)
    probs = None
    with torch.inference_mode():
        for engine, settings, _ckpt in members:
            p = predict_probs(engine, image, settings, device=device)
            probs = p if probs is None else probs.add_(p)
        probs.div_(len(members))
    return probs, image.shape


@dataclass
class Tuning:
    """What every step of a tuning reads: the validation ``samples``, the soft vote's ``members`` (engine,
    settings, checkpoint), the ``device``, whether to show progress bars, and with one member the ``store`` of its
    outputs."""

    samples: list
    members: list
    device: str
    progress: bool = True
    store: OutputStore | None = None


def collect(run: Tuning, bins: int) -> np.ndarray:
    """(N, 29, 2, bins) histograms of the soft-voted probabilities of every validation image (with a ``store``,
    one model's, counted per class box: :func:`box_histograms`)."""
    hists = []
    for sample in tqdm(run.samples, desc="tune thresholds", disable=not run.progress):
        if run.store is not None:
            out = run.store.selected(sample)
            with torch.inference_mode():
                gt = torch.from_numpy(ground_truth(sample, out.image_hw)).to(out.logits.device)
                hists.append(box_histograms(out, gt, bins))
            continue
        probs, hw = voted_probs(sample, run.members, run.device)
        hists.append(histograms(probs, torch.from_numpy(ground_truth(sample, hw)).to(probs.device), bins))
    return np.stack(hists)


def choose_postprocess(run: Tuning, thresholds):
    """The per-class post-processing (:func:`handseg.inference.postprocess.choose`) on the masks at ``thresholds``,
    with the (4, 29) mean Dice of every option."""
    counts = []
    for sample in tqdm(run.samples, desc="choose post-processing", disable=not run.progress):
        if run.store is not None:  # one model: its masks per class box, as deployed (equal to thresholding
            out = run.store.selected(sample)  # the dense probabilities, without building them)
            pred, hw = masks_from_outputs(out, list(thresholds)), out.image_hw
        else:
            probs, hw = voted_probs(sample, run.members, run.device)
            pred = ClassMasks.from_dense(threshold_probs(probs, list(thresholds)))
        counts.append(option_counts(pred, ground_truth_masks(sample, hw)))
    return choose(np.stack(counts))


def hand_reference(run: Tuning) -> HandNorm | None:
    """The hand normalisation's reference on ``samples`` from the first member's whole-image pass: the mean
    fraction of the image predicted as hand; the hands' mean axis (circular mean) and the largest deviation
    from it. None when no image shows a hand, or every pixel of one is hand. With a ``store`` of a cascade, the
    whole-image pass is its stored stage-1 logits (the same pass)."""
    engine, settings, _ckpt = run.members[0]
    fractions, angles = [], []
    for sample in tqdm(run.samples, desc="hand size and angle", disable=not run.progress):
        if run.store is not None and settings.input.prior is not None:
            out = run.store.outputs(sample)
            logits, hw = out.prior, out.image_hw
        else:
            image = read_image(sample.image_path)
            logits, hw = whole_image_logits(engine, image, settings, run.device), image.shape
        fractions.append(hand_fraction(logits))
        angles.append(hand_angle(logits, hw))
    fraction = float(np.mean(fractions))
    if not 0.0 < fraction < 1.0:
        return None
    seen = np.radians([a for a in angles if a is not None])
    if len(seen) == 0:
        return HandNorm(reference_fraction=fraction)
    mean = math.degrees(math.atan2(np.sin(seen).mean(), np.cos(seen).mean()))
    spread = max(abs(angle_difference(math.degrees(a), mean)) for a in seen)
    return HandNorm(reference_fraction=fraction, reference_angle=mean, angle_spread=spread)


def selection_counts(run: Tuning, thresholds, postprocess) -> dict:
    """Dice counts (N, 29, 3) of the first member's masks (at ``thresholds``, then ``postprocess``) on ``samples``
    with every tile (key None) and with the tile selection at each margin of :data:`MARGINS`; ``tiles``: how
    many tiles each ran, of ``possible``. Every tile runs once per image; a selection keeps the tiles it would
    run (:meth:`~handseg.inference.box_blend.ModelOutputs.keep`)."""
    engine, settings, _ckpt = run.members[0]
    probability = settings.selection.probability if settings.selection is not None else TileSelection().probability
    every = replace(settings, selection=None)
    counts: dict = {None: [], **{m: [] for m in MARGINS}}
    tiles = dict.fromkeys(MARGINS, 0)
    possible = 0
    for sample in tqdm(run.samples, desc="tile selection margin", disable=not run.progress):
        if run.store is not None:
            out = run.store.outputs(sample)
        else:
            out = run_model(engine, read_image(sample.image_path), every, run.device)
        truth = ground_truth_masks(sample, out.image_hw)
        every_tile = tuple(range(len(out.windows)))
        by_tiles = {every_tile: masks_from_outputs(out, thresholds, postprocess).counts(truth)}
        counts[None].append(by_tiles[every_tile])
        possible += len(out.windows)
        for margin in MARGINS:  # margins that keep the same tiles give the same masks: each set is blended once
            kept = tuple(selected_tiles(out.prior, out.image_hw, out.pad, out.windows, out.window_hw,
                                        TileSelection(probability, margin)))
            tiles[margin] += len(kept)
            if kept not in by_tiles:
                by_tiles[kept] = masks_from_outputs(out.keep(list(kept)), thresholds, postprocess).counts(truth)
            counts[margin].append(by_tiles[kept])
    return {"counts": {k: np.stack(v) for k, v in counts.items()}, "tiles": tiles, "possible": possible,
            "probability": probability}


def choose_selection(run: Tuning, thresholds, postprocess) -> dict | None:
    """The tile selection of a cascade (the first member): the smallest margin of :data:`MARGINS` whose mean
    validation Dice is at most :data:`SELECTION_MEAN_DROP` below every tile's and no class's mean Dice more than
    :data:`SELECTION_CLASS_DROP` below it (the largest margin when none is); with each margin's figures. None
    when the first member is not a cascade."""
    if run.members[0][1].input.prior is None:
        return None
    found = selection_counts(run, thresholds, postprocess)
    every = dice_from_counts(found["counts"][None]).mean(0)  # (29,) per-class mean over images
    rows, chosen = {}, MARGINS[-1]
    for margin in reversed(MARGINS):
        dice = dice_from_counts(found["counts"][margin]).mean(0)
        rows[margin] = {"mean_dice": round(float(dice.mean()), 6),
                        "largest_class_drop": round(float((every - dice).max()), 6),
                        "tiles_run": round(found["tiles"][margin] / max(found["possible"], 1), 4)}
        if every.mean() - dice.mean() <= SELECTION_MEAN_DROP and (every - dice).max() <= SELECTION_CLASS_DROP:
            chosen = margin
    return {"selection": TileSelection(found["probability"], chosen).to_dict(),
            "every_tile_mean_dice": round(float(every.mean()), 6),
            "margins": {m: rows[m] for m in MARGINS}}


def tune(cfg: EvalConfig, members, samples, bins: int = 100, progress: bool = True) -> dict:
    """The thresholds file's content: per-class thresholds, mean Dice tuned and at 0.5, per-class tuned Dice, the
    post-processing chosen at the tuned thresholds (with the mean Dice it reaches), the hand normalisation's
    reference and, for a cascade, the tile selection (with what each candidate margin scored)."""
    with tempfile.TemporaryDirectory(prefix="handseg_tuning_") as tmp:
        store = OutputStore(members[0], cfg.device, Path(tmp)) if len(members) == 1 else None
        run = Tuning(samples, members, cfg.device, progress, store)
        thresholds, tuned, at_default = best_thresholds(collect(run, bins))
        postprocess, option_dice = choose_postprocess(run, thresholds)
        reference = hand_reference(run)
        selection = None
        if cfg.tile_selection:
            selection = choose_selection(run, list(thresholds), postprocess if postprocess.active else None)
    chosen = option_dice[[OPTIONS.index((lc, fh)) for lc, fh in zip(postprocess.largest_component,
                                                                    postprocess.fill_holes)], np.arange(len(CLASSES))]
    return {
        "thresholds": {c: round(float(t), 4) for c, t in zip(CLASSES, thresholds)},
        "postprocess": postprocess.to_dict(),
        "hand_norm": None if reference is None else reference.to_dict(),
        "tile_selection": None if selection is None else selection["selection"],
        "tile_selection_search": None if selection is None else {k: v for k, v in selection.items()
                                                                 if k != "selection"},
        "mean_dice_tuned": round(float(tuned.mean()), 6),
        "mean_dice_at_0.5": round(float(at_default.mean()), 6),
        "mean_dice_tuned_postprocessed": round(float(chosen.mean()), 6),
        "per_class_dice_tuned": {c: round(float(d), 6) for c, d in zip(CLASSES, tuned)},
        "bins": bins,
        "n_images": len(samples),
        "members": [str(e.path or ckpt.folder) for e, _s, ckpt in members],
    }
