"""Per-class thresholds that maximise mean validation Dice, optionally for a soft vote of several checkpoints.

    python scripts/tune_thresholds.py [--cfg-path config/eval.yaml] [--checkpoint A --checkpoint B ...]
                                      [--bins 100] [--out outputs/eval/thresholds.yaml]

The output file is what ``thresholds:`` in eval.yaml names (see :mod:`evaluator.thresholds`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from evaluator.backends import BACKEND_CHOICES
from evaluator.config import load_eval_config
from evaluator.thresholds import tune, voters
from evaluator.validation_mode import validation_samples
from handseg.inference.hand_norm import describe_reference
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import ConfigError, cli_main


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--checkpoint", action="append", default=[],
                   help="checkpoint folder to include in the soft vote (repeatable; default: the config's)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="engine kind for every member (default: the config's)")
    p.add_argument("--bins", type=int, default=100)
    p.add_argument("--out", default=None, help="default: <output_dir>/thresholds.yaml")
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.bins < 2:
        raise ConfigError("--bins", "bins", "must be >= 2")
    cfg = load_eval_config(args.cfg_path)
    members = voters(cfg, args.checkpoint, args.backend, file=args.cfg_path)
    samples = validation_samples(cfg, members[0][2], file=args.cfg_path)
    result = tune(cfg, members, samples, args.bins)
    out = Path(args.out) if args.out else Path(cfg.output_dir) / "thresholds.yaml"
    atomic_write_text(out, yaml.safe_dump(result, sort_keys=False))
    kept = sum(any(v.values()) for v in result["postprocess"].values())
    print(f"mean Dice {result['mean_dice_at_0.5']:.4f} at 0.5 -> {result['mean_dice_tuned']:.4f} tuned -> "
          f"{result['mean_dice_tuned_postprocessed']:.4f} with post-processing on {kept} class(es) "
          f"({len(samples)} validation images, {len(members)} member(s))")
    print(f"hand normalisation: {describe_reference(result['hand_norm'])}")
    if result["tile_selection"] is not None:
        search = result["tile_selection_search"]
        margin = result["tile_selection"]["margin"]
        print(f"tile selection: stage 2 within {margin} px of stage 1's bones, "
              f"{100 * search['margins'][margin]['tiles_run']:.0f}% of the tiles, mean Dice "
              f"{search['margins'][margin]['mean_dice']:.4f} (every tile {search['every_tile_mean_dice']:.4f})")
    print(f"thresholds -> {out} (set `thresholds: {out}` in eval.yaml)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
