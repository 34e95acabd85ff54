#!/bin/sh
# The whole job on bundled phantom data, CPU only: data -> stage 1 -> stage 2 (cascade) -> engines -> thresholds
# -> QC model -> validation and report, submission, leaderboard score, efficiency, robustness, predictions for new
# images, quality-control report.
# Each step reuses what an earlier run already produced where that is safe (the data set; a stage trained with
# the same config and inputs), so a second `make demo` is quick.
set -eu
cd "$(dirname "$0")/.."
[ -d .venv/bin ] && PATH="$PWD/.venv/bin:$PATH" && export PATH
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

DATA=data/phantom
EVAL=outputs/demo/eval
# Robustness and the QC report share their images between two processes (one torch thread each) on a CPU with two
# or more cores: about 1.2x as fast on 2 cores, the same rows.
WORKERS=$(python -c 'import os; print(min(2, os.cpu_count() or 1))')
START=$(date +%s)
elapsed() { t=$(( $(date +%s) - START )); printf '%d:%02d' $((t / 60)) $((t % 60)); }
step() { printf '\n==> [%s] %s\n' "$(elapsed)" "$*"; }

step "1/13 phantom data set (40 train IDs, 10 test IDs, 2048x2048) in $DATA"
python scripts/make_phantom.py --out "$DATA" --train-ids 40 --test-ids 10 --size 2048 --seed 0 --preview

step "2/13 data set summary and folds"
python scripts/dataset_summary.py --data "$DATA" --folds 5 --seed 0

train_stage() {  # $1: stage number, $2: config, $3: output folder, $4...: files the stage depends on
  stage=$1; cfg=$2; run=$3; shift 3
  stamp=$(cat "$cfg" "$@" | sha256sum | cut -c1-16)  # the config and its inputs: a change retrains the stage
  if [ -f "$run/best/model.safetensors" ] && [ "$(cat "$run/DONE" 2>/dev/null)" = "$stamp" ]; then
    echo "stage $stage already trained with this config and data: $run/best (delete $run to retrain)"
  else
    rm -rf "$run"
    sh accelerate_train.sh --cfg-path "$cfg"
    echo "$stamp" > "$run/DONE"
  fi
}

step "3/13 stage 1: whole images at 384 px, strong pose, zoom and exposure augmentation"
train_stage 1 config/demo/train_stage1.yaml runs/demo_stage1 "$DATA/phantom.json"

step "4/13 stage 2: a cascade on native 512 px crops, stage 1's probabilities as extra input channels"
train_stage 2 config/demo/train_stage2.yaml runs/demo_stage2 "$DATA/phantom.json" runs/demo_stage1/DONE

step "5/13 ahead-of-time compiled engines (AOTInductor on CPU; a cascade compiles both stages)"
python tensorrt_aot.py --cfg-path config/demo/eval.yaml

step "6/13 per-class thresholds, post-processing, the hand reference (size, axis) and the tile selection margin, from the validation fold"
python scripts/tune_thresholds.py --cfg-path config/demo/eval.yaml --out "$EVAL/thresholds.yaml"

step "7/13 quality-control model: predicted Dice from label-free signals, fitted on the validation fold"
python scripts/fit_qc.py --cfg-path config/demo/eval.yaml

step "8/13 validation (per-class Dice at 2048x2048, report.html) and submission CSV with its quality control"
sh accelerate_eval.sh --mode validation submission --cfg-path config/demo/eval.yaml  # one launch, one engine load

step "9/13 leaderboard score of the submission against the held-out test labels (half of them strongly bent)"
python scripts/score_submission.py --csv "$EVAL/submission.csv" --labels "$DATA/test_labels"

step "10/13 efficiency: eager vs AOTInductor, per tile and per 2048x2048 image, time by phase"
python evaluate_efficiency.py --cfg-path config/demo/eval.yaml

step "11/13 robustness: Dice under rotation, zoom, translation, exposure, noise, blur and JPEG"
python scripts/robustness.py --cfg-path config/demo/eval.yaml --workers "$WORKERS"

step "12/13 predictions for new X-rays: overlay, annotation JSON, masks, qc.csv (two test images)"
python predict.py "$DATA/test/DCM/ID041" --cfg-path config/demo/eval.yaml --out outputs/demo/predict --masks npz \
  --pixel-spacing 0.1

step "13/13 quality control measured: test split, perturbed test images, phantom failure cases"
python scripts/make_failure_cases.py --out data/phantom_failures --persons 2 --size 2048 --seed 0 --preview
python scripts/qc_report.py --cfg-path config/demo/eval.yaml --failures data/phantom_failures --workers "$WORKERS"

cat <<EOT

Demo finished in $(elapsed) (min:s, after the install). Results:
  report (open in a browser) $EVAL/report.html
  data set preview           $DATA/preview.png (training images) and $DATA/preview_test.png (test images)
  stage 1 / 2 checkpoints    runs/demo_stage1/best, runs/demo_stage2/best (model cards README.md; TensorBoard logs)
  compiled engines           trt_models/ (engines + manifests)
  thresholds                 $EVAL/thresholds.yaml (with the chosen post-processing); QC model $EVAL/qc_model.json
  validation                 $EVAL/ (dice.md, dice.csv, dice.json, chart, overlays/)
  submission                 $EVAL/submission.csv, $EVAL/qc.csv (flagged overlays in $EVAL/qc_flagged/)
  efficiency                 $EVAL/efficiency/ (efficiency.md, efficiency.json, chart)
  robustness                 $EVAL/robustness/ (robustness.md, robustness.json, chart)
  predictions                outputs/demo/predict/ (overlay PNG, annotation JSON, masks, areas_mm2.csv, qc.csv)
  quality control            $EVAL/qc_report/ (qc_report.md, qc_report.json, chart); failure cases data/phantom_failures/
EOT
