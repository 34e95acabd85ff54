#!/bin/sh
# Write an Accelerate config for this machine: every visible NVIDIA GPU (DDP when more than one), bf16 where
# the GPU supports it (Ampere or newer), fp16 on older GPUs, plain fp32 CPU otherwise.
#
#   sh scripts/accelerate_config.sh [OUT]        (default OUT: config/accelerate/local.yaml)
#
# Multi-node: edit num_machines, machine_rank, main_process_ip, main_process_port in the written file and set
# num_processes to the total GPU count over all machines; run the same training command on every machine.
set -eu
cd "$(dirname "$0")/.."
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH" && export PATH
OUT="${1:-config/accelerate/local.yaml}"

# GPU count and bf16 support: torch when it sees CUDA, else nvidia-smi (compute capability >= 8.0 -> bf16).
INFO=$(python - <<'PY' 2>/dev/null || true
import torch
if torch.cuda.is_available():
    n = torch.cuda.device_count()
    print(n, "bf16" if torch.cuda.is_bf16_supported() else "fp16")
else:
    print(0, "no")
PY
)
NGPU=${INFO%% *}; PREC=${INFO#* }
if [ -z "$INFO" ] || [ "$NGPU" = "0" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    NGPU=$(nvidia-smi -L | grep -c '^GPU')
    CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | cut -d. -f1)
    if [ -n "$CAP" ] && [ "$CAP" -ge 8 ] 2>/dev/null; then PREC=bf16; else PREC=fp16; fi
  else
    NGPU=0; PREC=no
  fi
fi

if [ "$NGPU" -ge 2 ]; then DIST=MULTI_GPU; NPROC=$NGPU; CPU=false
elif [ "$NGPU" -eq 1 ]; then DIST="'NO'"; NPROC=1; CPU=false
else DIST="'NO'"; NPROC=1; CPU=true; PREC=no
fi
[ "$PREC" = "no" ] && PREC="'no'"

mkdir -p "$(dirname "$OUT")"
TMP="$OUT.tmp.$$"
cat > "$TMP" <<YAML
# Written by scripts/accelerate_config.sh: $NGPU GPU(s), mixed precision $PREC.
compute_environment: LOCAL_MACHINE
distributed_type: $DIST
use_cpu: $CPU
mixed_precision: $PREC
num_machines: 1
machine_rank: 0
num_processes: $NPROC
gpu_ids: all
main_training_function: main
downcast_bf16: 'no'
rdzv_backend: static
same_network: true
tpu_env: []
tpu_use_cluster: false
tpu_use_sudo: false
YAML
mv "$TMP" "$OUT"
echo "wrote $OUT ($NGPU GPU(s), distributed_type $DIST, mixed_precision $PREC)"
echo "use it: sh accelerate_train.sh --cfg-path config/train_stage1.yaml --accelerate-config $OUT"
