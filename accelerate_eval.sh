#!/bin/sh
# Evaluation under Accelerate: validation Dice or the submission CSV, images sharded across processes.
#
#   sh accelerate_eval.sh [--accelerate-config FILE] --mode validation|submission [...] [--cfg-path config/eval.yaml]
#                         [--set key.sub=value ...]
#
# Other options (--backend, --output-dir) go to `python -m evaluator.run_eval`. The Accelerate config follows the
# rule of accelerate_train.sh (handseg/runtime/launch_config.py): --accelerate-config, the YAML's
# accelerate_config:, else the single-GPU config when a GPU is visible and the CPU config otherwise. The config and
# the devices are checked before any process starts (evaluator/launch.py); paths are relative to the working
# directory.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
[ -d "$HERE/.venv/bin" ] && PATH="$HERE/.venv/bin:$PATH" && export PATH
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" && export PYTHONPATH
exec python -m evaluator.launch "$@"
