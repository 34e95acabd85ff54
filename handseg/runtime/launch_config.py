"""Which Accelerate config a launch uses: one rule for ``accelerate_train.sh`` and ``accelerate_eval.sh``.

``--accelerate-config FILE`` when given, else the YAML's ``accelerate_config:``, else
``config/accelerate/single_gpu.yaml`` when a CUDA device is visible and ``config/accelerate/cpu.yaml`` otherwise.

    python -m handseg.runtime.launch_config --cfg-path config/train_stage1.yaml [--accelerate-config FILE]  # the path
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from handseg.runtime.config_schema import load_yaml
from handseg.runtime.errors import ConfigError, cli_main

GPU_CONFIG = Path("config/accelerate/single_gpu.yaml")
CPU_CONFIG = Path("config/accelerate/cpu.yaml")


def accelerate_config(cfg_path: str | Path, explicit: str | Path | None = None) -> Path:
    """The Accelerate config file for a launch with the YAML ``cfg_path`` (see the module docstring); a file
    that does not exist is a ConfigError naming ``accelerate_config``."""
    chosen = explicit or load_yaml(cfg_path).get("accelerate_config")
    if not chosen:
        chosen = GPU_CONFIG if torch.cuda.is_available() else CPU_CONFIG
    if not Path(chosen).is_file():
        raise ConfigError(cfg_path, "accelerate_config",
                          f"file {chosen} not found (scripts/accelerate_config.sh writes one)")
    return Path(chosen)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the Accelerate config file a launch uses")
    parser.add_argument("--cfg-path", required=True)
    parser.add_argument("--accelerate-config", default=None)
    args = parser.parse_args(argv)
    print(accelerate_config(args.cfg_path, args.accelerate_config))


if __name__ == "__main__":
    main()
