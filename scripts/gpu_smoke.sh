#!/bin/sh
# The GPU paths, run and measured, on a machine with an NVIDIA GPU (about 10 minutes on one H100): training steps
# at the GPU configs' sizes (bf16 stage 1, fp16/bf16 stage 2), the per-step costs, the README's GPU chain on a small
# phantom data set (engines: TensorRT where it imports, AOTInductor; validation, submission, efficiency) and a
# 2-process evaluation when two GPUs are visible. Writes outputs/gpu_smoke/gpu_smoke.json and gpu_smoke.md.
#
#   sh scripts/gpu_smoke.sh [--out DIR] [--workdir DIR] [--skip-steps] [--skip-chain]
#
# Needs the project installed (make install, or pip install -e .; pip install -e .[tensorrt] for TensorRT).
set -eu
HERE=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$HERE/.venv/bin" ] && PATH="$HERE/.venv/bin:$PATH" && export PATH
PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" && export PYTHONPATH
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
exec python "$HERE/scripts/gpu_smoke.py" "$@"
