#!/bin/sh
# Evaluation under Accelerate: validation Dice or the submission CSV, images sharded across processes.
#   sh accelerate_eval.sh [--accelerate-config FILE] --mode validation|submission [--cfg-path config/eval.yaml]
# Other options (--backend, --output-dir) go to `python -m evaluator.run_eval`.
set -eu
cd "$(dirname "$0")"
if [ -x .venv/bin/accelerate ]; then ACCELERATE=.venv/bin/accelerate; else ACCELERATE=accelerate; fi
if [ "${1:-}" = "--accelerate-config" ]; then
  CONFIG="$2"; shift 2
  exec "$ACCELERATE" launch --config_file "$CONFIG" -m evaluator.run_eval "$@"
fi
exec "$ACCELERATE" launch -m evaluator.run_eval "$@"
