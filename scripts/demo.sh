#!/bin/sh
# The whole job on bundled phantom data, CPU only: data -> stage 1 -> stage 2 -> engine -> validation,
# submission, leaderboard score, efficiency and robustness. Each step reuses what an earlier run already produced
# where that is safe (the data set, a finished stage), so a second `make demo` is quick.
set -eu
cd "$(dirname "$0")/.."
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH" && export PATH
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

DATA=data/phantom
step() { printf '\n==> %s\n' "$*"; }

step "1/9 phantom data set (40 train IDs, 10 test IDs, 2048x2048) in $DATA"
python scripts/make_phantom.py --out "$DATA" --train-ids 40 --test-ids 10 --size 2048 --seed 0 --preview

step "2/9 data set summary and folds"
python scripts/dataset_summary.py --data "$DATA" --folds 5 --seed 0

train_stage() {  # $1: stage number, $2: config, $3: output folder
  if [ -f "$3/best/model.safetensors" ] && [ -f "$3/DONE" ]; then
    echo "stage $1 already trained: $3/best (delete $3 to retrain)"
  else
    sh accelerate_train.sh --cfg-path "$2"
    touch "$3/DONE"
  fi
}

step "3/9 stage 1: whole images at low resolution"
train_stage 1 config/demo/train_stage1.yaml runs/demo_stage1

step "4/9 stage 2: native-resolution crops, initialised from stage 1's best"
train_stage 2 config/demo/train_stage2.yaml runs/demo_stage2

step "5/9 ahead-of-time compiled engine (AOTInductor on CPU)"
python tensorrt_aot.py --cfg-path config/demo/eval.yaml

step "6/9 validation (per-class Dice at 2048x2048) and submission CSV"
sh accelerate_eval.sh --mode validation --cfg-path config/demo/eval.yaml
sh accelerate_eval.sh --mode submission --cfg-path config/demo/eval.yaml

step "7/9 leaderboard score of the submission against the held-out test labels"
python scripts/score_submission.py --csv outputs/demo/eval/submission.csv --labels "$DATA/test_labels"

step "8/9 efficiency: eager vs AOTInductor, per tile and per 2048x2048 image"
python evaluate_efficiency.py --cfg-path config/demo/eval.yaml

step "9/9 robustness: Dice under rotation, zoom, translation, exposure, noise, blur and JPEG"
python scripts/robustness.py --cfg-path config/demo/eval.yaml

cat <<EOT

Demo finished. Results:
  data set preview        $DATA/preview.png
  stage 1 / 2 checkpoints runs/demo_stage1/best, runs/demo_stage2/best (TensorBoard logs under runs/)
  compiled engine         trt_models/ (engine + manifest)
  validation report       outputs/demo/eval/ (dice.md, dice.csv, dice.json, chart, overlays/)
  submission              outputs/demo/eval/submission.csv
  efficiency              outputs/demo/eval/efficiency/ (efficiency.md, efficiency.json, chart)
  robustness              outputs/demo/eval/robustness/ (robustness.md, robustness.json, chart)
EOT
