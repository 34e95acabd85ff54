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
# No config given: one process, on the GPU when one is visible (as accelerate_train.sh chooses).
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  CONFIG=config/accelerate/single_gpu.yaml
else
  CONFIG=config/accelerate/cpu.yaml
fi
exec "$ACCELERATE" launch --config_file "$CONFIG" -m evaluator.run_eval "$@"
