#!/bin/sh
# Train one stage under Hugging Face Accelerate.
#
#   sh accelerate_train.sh --cfg-path config/train_stage1.yaml [--dryrun] [--accelerate-config FILE]
#                          [--set key.sub=value ...] [-- extra `accelerate launch` options, e.g. --num_processes 2]
#
# --set overrides a config key for this run (the value in YAML, repeatable): --set data.batch_size=2.
# The Accelerate config is --accelerate-config, else the YAML's `accelerate_config:`, else
# config/accelerate/single_gpu.yaml when a GPU is visible and config/accelerate/cpu.yaml otherwise. The config,
# the devices and the cache are checked (the cache built) in one process before training starts
# (trainer/launch.py); paths are relative to the working directory.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
[ -d "$HERE/.venv/bin" ] && PATH="$HERE/.venv/bin:$PATH" && export PATH
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" && export PYTHONPATH
exec python -m trainer.launch "$@"
