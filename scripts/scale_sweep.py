"""A checkpoint's validation Dice at full resolution when fed its input at several scales.

    python scripts/scale_sweep.py --checkpoint runs/demo_stage1/best [--data-root data/phantom]
                                  [--sides 384 576 768 1024] [--tiles 512 1024] [--max-images N] [--out DIR]

The validation fold is the one the checkpoint's training run used (its recorded data section; --data-root when
the data moved). Prints a markdown table and writes it with a JSON next to it (default:
``<checkpoint>/../scale_sweep``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from evaluator.scale_sweep import format_sweep_table, run_scale_sweep, sweep_specs
from handseg.data.dataset_index import load_split
from handseg.model.checkpoint import load_checkpoint, recorded_data_config
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data-root", type=Path, default=None, help="default: the training run's data root")
    p.add_argument("--sides", type=int, nargs="*", default=[384, 576, 768, 1024], help="whole-image input sides")
    p.add_argument("--tiles", type=int, nargs="*", default=[512, 1024], help="native tile sides")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    ckpt = load_checkpoint(args.checkpoint, device=args.device)
    data = recorded_data_config(ckpt.info, ckpt.folder)
    if args.data_root is not None:
        data = replace(data, data_root=args.data_root)
    samples = load_split(data, file=ckpt.folder / "handseg.json", key="config.data").val[: args.max_images]
    rows = run_scale_sweep(ckpt, samples, sweep_specs(ckpt, args.sides, args.tiles), args.device)
    table = format_sweep_table(rows, len(samples))
    out = args.out or ckpt.folder.parent / "scale_sweep"
    atomic_write_text(out / "scale_sweep.md", f"# Scale sweep of `{ckpt.folder}`\n\n{table}\n")
    atomic_write_text(out / "scale_sweep.json", json.dumps({"checkpoint": str(ckpt.folder), "rows": rows}, indent=2))
    print(table)
    print(f"table -> {out / 'scale_sweep.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
