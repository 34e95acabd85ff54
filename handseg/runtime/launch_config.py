"""Which Accelerate config a launch uses, and whether this machine can run it: one rule for ``accelerate_train.sh``
and ``accelerate_eval.sh``.

``--accelerate-config FILE`` when given, else the YAML's ``accelerate_config:`` (after the command line's
``--set``), else ``config/accelerate/single_gpu.yaml`` when a CUDA device is visible and
``config/accelerate/cpu.yaml`` otherwise. An Accelerate config that asks for GPUs (``use_cpu`` not true) where
CUDA is not usable, or for more GPUs than are visible, stops the launch with one line
(:func:`check_accelerate_devices`).

    python -m handseg.runtime.launch_config --cfg-path config/train_stage1.yaml [--accelerate-config FILE]  # the path
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from handseg.runtime.config_schema import load_yaml
from handseg.runtime.devices import CPU_ACCELERATE_HINT, require_gpus
from handseg.runtime.errors import ConfigError, cli_main
from handseg.runtime.overrides import add_set_argument, apply_overrides, parse_overrides

GPU_CONFIG = Path("config/accelerate/single_gpu.yaml")
CPU_CONFIG = Path("config/accelerate/cpu.yaml")


def accelerate_config(cfg_path: str | Path, explicit: str | Path | None = None, sets: Sequence[str] = ()) -> Path:
    """The Accelerate config file for a launch with the YAML ``cfg_path`` and its ``--set`` strings (see the module
    docstring); a file that does not exist is a ConfigError naming ``accelerate_config``."""
    chosen = explicit or apply_overrides(load_yaml(cfg_path), parse_overrides(sets, cfg_path)).get("accelerate_config")
    if not chosen:
        chosen = GPU_CONFIG if torch.cuda.is_available() else CPU_CONFIG
    if not Path(chosen).is_file():
        raise ConfigError(cfg_path, "accelerate_config",
                          f"file {chosen} not found (scripts/accelerate_config.sh writes one)")
    return Path(chosen)


def uses_gpus(acc_path: str | Path, launch_args: Sequence[str] = ()) -> int:
    """How many GPUs one machine of the Accelerate config ``acc_path`` needs (0: it runs on the CPU).
    ``launch_args``: extra ``accelerate launch`` options, which win (``--cpu``, ``--num_processes N``)."""
    data = load_yaml(acc_path)
    args = list(launch_args)
    if data.get("use_cpu") is True or data.get("distributed_type") == "MULTI_CPU" or "--cpu" in args:
        return 0
    processes = int(data.get("num_processes") or 1)
    if "--num_processes" in args[:-1]:
        processes = int(args[args.index("--num_processes") + 1])
    machines = max(1, int(data.get("num_machines") or 1))
    return max(1, processes // machines)


def check_accelerate_devices(acc_path: str | Path, launch_args: Sequence[str] = ()) -> None:
    """An Accelerate config that asks for GPUs must find them usable here: one line naming the file otherwise."""
    count = uses_gpus(acc_path, launch_args)
    if count:
        require_gpus(count, acc_path, "use_cpu", CPU_ACCELERATE_HINT)


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the Accelerate config file a launch uses")
    parser.add_argument("--cfg-path", required=True)
    parser.add_argument("--accelerate-config", default=None)
    add_set_argument(parser)
    args = parser.parse_args(argv)
    print(accelerate_config(args.cfg_path, args.accelerate_config, args.set))
    return 0


if __name__ == "__main__":
    sys.exit(main())
