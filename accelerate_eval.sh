#!/bin/sh
# Evaluation under Accelerate: validation Dice or the submission CSV, images sharded across processes.
#   sh accelerate_eval.sh [--accelerate-config FILE] --mode validation|submission [--cfg-path config/eval.yaml]
# Other options (--backend, --output-dir) go to `python -m evaluator.run_eval`. The Accelerate config follows the
# rule of accelerate_train.sh (handseg/runtime/launch_config.py): --accelerate-config, the YAML's accelerate_config:, else the
# single-GPU config when a GPU is visible and the CPU config otherwise.
set -eu
cd "$(dirname "$0")"
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH" && export PATH
ACC=""
if [ "${1:-}" = "--accelerate-config" ]; then ACC="$2"; shift 2; fi
CFG=config/eval.yaml
prev=""
for arg in "$@"; do
  [ "$prev" = "--cfg-path" ] && CFG="$arg"
  case "$arg" in --cfg-path=*) CFG="${arg#*=}" ;; esac
  prev="$arg"
done
CONFIG=$(python -m handseg.runtime.launch_config --cfg-path "$CFG" ${ACC:+--accelerate-config "$ACC"}) || exit 2
# `accelerate launch` that passes signals on and exits with the evaluator's own code (see accelerate_train.sh).
exec python -m handseg.runtime.launcher --quiet --config_file "$CONFIG" -m evaluator.run_eval "$@"
