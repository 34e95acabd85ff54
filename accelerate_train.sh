#!/bin/sh
# Train one stage under Hugging Face Accelerate.
#
#   sh accelerate_train.sh --cfg-path config/train_stage1.yaml [--dryrun] [--accelerate-config FILE]
#                          [-- extra `accelerate launch` options, e.g. --num_processes 2 --cpu]
#
# The Accelerate config is --accelerate-config, else the YAML's `accelerate_config:`, else
# config/accelerate/single_gpu.yaml when a GPU is visible and config/accelerate/cpu.yaml otherwise.
set -eu
cd "$(dirname "$0")"
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH" && export PATH

usage() { echo "usage: sh accelerate_train.sh --cfg-path FILE [--dryrun] [--accelerate-config FILE] [-- LAUNCH_ARGS]" >&2; exit 2; }

CFG=""; ACC=""; DRY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cfg-path) [ $# -ge 2 ] || usage; CFG="$2"; shift 2 ;;
    --cfg-path=*) CFG="${1#*=}"; shift ;;
    --accelerate-config) [ $# -ge 2 ] || usage; ACC="$2"; shift 2 ;;
    --accelerate-config=*) ACC="${1#*=}"; shift ;;
    --dryrun) DRY="--dryrun"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    --) shift; break ;;
    *) echo "error: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$CFG" ] || usage
[ -f "$CFG" ] || { echo "error: $CFG: config file not found" >&2; exit 2; }

# One rule for both launch scripts (handseg/runtime/launch_config.py): --accelerate-config, the YAML's accelerate_config:,
# else the single-GPU config when a GPU is visible and the CPU config otherwise.
ACC=$(python -m handseg.runtime.launch_config --cfg-path "$CFG" ${ACC:+--accelerate-config "$ACC"}) || exit 2

# Validate the config once, here, so that a bad key is one clean line before any process starts.
python -m trainer.train --cfg-path "$CFG" --check-config || exit $?

# handseg.runtime.launcher is `accelerate launch` that passes SIGTERM/SIGINT on to the trainer (which saves its state and
# exits 130) and exits with the trainer's own code (2 after a one-line error), without a launcher traceback.
echo "accelerate launch --config_file $ACC $* -m trainer.train --cfg-path $CFG $DRY"
exec python -m handseg.runtime.launcher --quiet --config_file "$ACC" "$@" -m trainer.train --cfg-path "$CFG" $DRY
