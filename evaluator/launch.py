"""What ``accelerate_eval.sh`` runs: check the config and the devices, then launch the evaluation.

    python -m evaluator.launch [--accelerate-config FILE] --mode validation|submission [...]
                               [--cfg-path config/eval.yaml] [--set key.sub=value ...]
                               [other options of evaluator.run_eval]

Before any evaluation process starts, the eval config with its ``--set`` overrides is checked, its ``device``
must be usable here (``device: cuda...`` without a usable GPU is one line saying to ``--set device=cpu``), and so
must the Accelerate config (:mod:`handseg.runtime.launch_config`). Then this process becomes the launcher
(:func:`handseg.runtime.launcher.exec_launch`), which starts ``python -m evaluator.run_eval`` with every option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluator.config import load_eval_config
from handseg.runtime.devices import require_device
from handseg.runtime.errors import cli_main
from handseg.runtime.launch_config import accelerate_config, check_accelerate_devices
from handseg.runtime.launcher import exec_launch
from handseg.runtime.overrides import add_set_argument


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This step's options, and the arguments ``evaluator.run_eval`` gets (all but ``--accelerate-config``)."""
    parser = argparse.ArgumentParser(prog="sh accelerate_eval.sh", description="Evaluation under Accelerate")
    parser.add_argument("--accelerate-config", default=None, help="default: the YAML's accelerate_config")
    parser.add_argument("--mode", choices=["validation", "submission"], nargs="+", required=True)
    parser.add_argument("--cfg-path", default="config/eval.yaml", type=Path)
    add_set_argument(parser)
    args, rest = parser.parse_known_args(argv)
    sets = [item for text in args.set for item in ("--set", text)]
    return args, ["--mode", *args.mode, "--cfg-path", str(args.cfg_path), *sets, *rest]


@cli_main
def main(argv: list[str] | None = None) -> int:
    args, eval_args = parse_args(list(sys.argv[1:] if argv is None else argv))
    cfg = load_eval_config(args.cfg_path, sets=args.set)
    require_device(cfg.device, args.cfg_path)
    acc = accelerate_config(args.cfg_path, args.accelerate_config, args.set)
    check_accelerate_devices(acc)
    exec_launch(acc, "evaluator.run_eval", eval_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
