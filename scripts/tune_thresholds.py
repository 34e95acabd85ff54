"""Per-class thresholds that maximise mean validation Dice, optionally for a soft vote of several checkpoints.

    python scripts/tune_thresholds.py [--cfg-path config/eval.yaml] [--checkpoint A --checkpoint B ...]
                                      [--bins 100] [--out outputs/eval/thresholds.yaml]

For each validation image the (averaged) probabilities of every class are binned into ``bins`` equal bins; the
per-bin counts of all pixels and of ground-truth pixels give, for every candidate threshold k/bins, the exact
intersection and predicted area, hence the exact per-image Dice. Memory stays at one image's probabilities plus
(images x 29 x bins) counts, whatever the resolution. The output file is what ``thresholds:`` in eval.yaml names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handseg.errors import cli_main  # noqa: E402

DICE_EPS = 1e-4


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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Tune per-class thresholds on the validation fold")
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="checkpoint folder to include in the soft vote (repeatable; default: the config's)")
    p.add_argument("--backend", choices=["tensorrt", "aot_inductor", "eager", "auto"], default=None,
                   help="engine kind for every member (default: the config's)")
    p.add_argument("--bins", type=int, default=100)
    p.add_argument("--out", default=None, help="default: <output_dir>/thresholds.yaml")
    return p.parse_args(argv)


def members(cfg, checkpoints: list[str], backend: str | None):
    """[(engine, settings)] for each checkpoint of the soft vote, each at its own input scale."""
    from dataclasses import replace

    from evaluator.engines import inference_settings, load_bundle, load_engine

    out = []
    for ckpt in checkpoints or [cfg.checkpoint]:
        member_cfg = replace(cfg, checkpoint=Path(ckpt), backend=backend or cfg.backend)
        bundle = load_bundle(member_cfg)
        engine = load_engine(member_cfg, bundle=bundle)
        out.append((engine, inference_settings(member_cfg, bundle[3], engine), bundle[1]))
    return out


def collect(samples, voters, device: str, bins: int, progress: bool = True) -> np.ndarray:
    """(N, 29, 2, bins) histograms of the soft-voted probabilities of every validation image."""
    from tqdm.auto import tqdm

    hists = []
    for sample in tqdm(samples, desc="tune", disable=not progress):
        with torch.inference_mode():
            hists.append(_image_hist(sample, voters, device, bins))
    return np.stack(hists)


def _image_hist(sample, voters, device: str, bins: int) -> np.ndarray:
    """(29, 2, bins) histograms of one image's soft-voted probabilities (mean over the members)."""
    from handseg.image_io import read_image
    from handseg.inference import predict_probs
    from handseg.validation import ground_truth

    image = read_image(sample.image_path)
    probs = None
    for engine, settings, _info in voters:
        p = predict_probs(engine, image, settings, device=device)
        probs = p if probs is None else probs.add_(p)
    probs.div_(len(voters))
    gt = torch.from_numpy(ground_truth(sample, image.shape)).to(probs.device)
    return histograms(probs, gt, bins)


@cli_main
def main(argv=None) -> dict:
    import yaml

    from evaluator.config import load_eval_config
    from evaluator.validate import validation_samples
    from handseg.atomic import atomic_write_text
    from handseg.classes import CLASSES
    from handseg.errors import ConfigError, DataFormatError

    args = parse_args(argv)
    if args.bins < 2:
        raise ConfigError("--bins", "bins", "must be >= 2")
    cfg = load_eval_config(args.cfg_path)
    voters = members(cfg, args.checkpoint, args.backend)
    samples = validation_samples(cfg, voters[0][2])
    if not samples:
        raise DataFormatError(cfg.data_root, "the validation fold is empty")
    hists = collect(samples, voters, cfg.device, args.bins)
    thresholds, tuned, at_default = best_thresholds(hists)
    result = {
        "thresholds": {c: round(float(t), 4) for c, t in zip(CLASSES, thresholds)},
        "mean_dice_tuned": round(float(tuned.mean()), 6),
        "mean_dice_at_0.5": round(float(at_default.mean()), 6),
        "per_class_dice_tuned": {c: round(float(d), 6) for c, d in zip(CLASSES, tuned)},
        "bins": args.bins,
        "n_images": len(samples),
        "members": [str(e.path or ckpt) for (e, _s, _i), ckpt in zip(voters, args.checkpoint or [cfg.checkpoint])],
    }
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "thresholds.yaml"
    atomic_write_text(out, yaml.safe_dump(result, sort_keys=False))
    print(f"mean Dice {result['mean_dice_at_0.5']:.4f} at 0.5 -> {result['mean_dice_tuned']:.4f} tuned "
          f"({len(samples)} validation images, {len(voters)} member(s))")
    print(f"thresholds -> {out} (set `thresholds: {out}` in eval.yaml)")
    return result


if __name__ == "__main__":
    main()
