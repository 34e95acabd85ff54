"""What ``accelerate_train.sh`` runs: check the config and the devices, build the cache, then launch the trainer.

    python -m trainer.launch --cfg-path FILE [--dryrun] [--accelerate-config FILE] [--set key.sub=value ...]
                             [-- extra `accelerate launch` options, e.g. --num_processes 2]

Everything before the launch happens in this one process, and every problem is one line and exit 2 before a
training process starts: the config with its ``--set`` overrides (as ``python -m trainer.train --check-config``
checks it), the Accelerate config (:mod:`handseg.runtime.launch_config`: a GPU config where CUDA is not usable
stops here and says how to run on the CPU), and the cache (:mod:`trainer.prepare`, built here with a progress
bar so that no training process waits for another one to build it). Then this process becomes the launcher
(:func:`handseg.runtime.launcher.exec_launch`), which starts ``python -m trainer.train`` with the same
``--cfg-path``, ``--dryrun`` and ``--set``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handseg.runtime.errors import cli_main
from handseg.runtime.launch_config import accelerate_config, check_accelerate_devices
from handseg.runtime.launcher import exec_launch
from handseg.runtime.overrides import add_set_argument
from trainer.prepare import describe, prepare_cache
from trainer.train import check_config


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The launch script's options, and the ``accelerate launch`` options after ``--``."""
    launch = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="sh accelerate_train.sh", description="Train one stage under Accelerate")
    parser.add_argument("--cfg-path", required=True, type=Path, help="training YAML (config/train_stage1.yaml, ...)")
    parser.add_argument("--dryrun", action="store_true", help="a few train and validation steps, no files")
    parser.add_argument("--accelerate-config", default=None, help="default: the YAML's accelerate_config")
    add_set_argument(parser)
    return parser.parse_args(own), launch


def trainer_args(args: argparse.Namespace) -> list[str]:
    """The arguments ``python -m trainer.train`` gets: the same config, dry run and overrides."""
    sets = [item for text in args.set for item in ("--set", text)]
    return ["--cfg-path", str(args.cfg_path), *(["--dryrun"] if args.dryrun else []), *sets]


@cli_main
def main(argv: list[str] | None = None) -> int:
    args, launch = parse_args(list(sys.argv[1:] if argv is None else argv))
    if not args.cfg_path.is_file():
        print(f"error: {args.cfg_path}: config file not found", file=sys.stderr)
        sys.exit(2)
    cfg, _ = check_config(args.cfg_path, args.set, args.dryrun)
    acc = accelerate_config(args.cfg_path, args.accelerate_config, args.set)
    check_accelerate_devices(acc, launch)
    print(describe(prepare_cache(cfg, args.cfg_path)), flush=True)
    exec_launch(acc, "trainer.train", trainer_args(args), launch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
