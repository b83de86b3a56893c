#!/bin/bash
# Issue 13's recipe screen for PsCo on Omniglot, chosen on the validation split only: each screen run trains for 10
# minutes (cosine schedule over the budget, seed 0, unsupervised Vinyals train split) and changes one thing from
# the baseline (families_table.sh's psco-cosine-conv4-omniglot-unsupervised-10min flags), in the direction of the
# paper's reference recipe (github.com/alinlab/PsCo); then 600 validation episodes at 5-way and 20-way 1-shot.
# Runs one after another at normal priority, other work on the machine at `nice -n 19`; each run's start and end
# load average is printed. Resumable like the other tables (a killed training continues from its backup).
# Usage: bash benchmarks/psco_screen.sh [NAME ...]   (no argument: every screen run, in the order below)
# The recorded runs ran from a clean checkout of one commit (MSSL_TF="env PYTHONPATH=<checkout> .venv/bin/mssl-tf"),
# as their records' `commit` says.
set -u
set -f  # flags such as hidden_units=[512] are not file patterns
cd "$(dirname "$0")/.."
M=${MSSL_TF:-.venv/bin/mssl-tf}
OUT=runs/psco-screen
RESULTS=benchmarks/results
COMMON="--minutes 10 --steps 100000 --steps-per-epoch 250 --validate-episodes 200 --seed 0 --method psco --lr-schedule cosine"
BASE="--batch-size 128 --learning-rate 1e-3 --option hidden_units=[512] --option projection_units=128"
mkdir -p $OUT

declare -A FLAGS=(
  # the baseline, rerun beside the screen runs (same flags as families_table.sh's 10-minute cosine row)
  [psco-screen-baseline]="$BASE --views omniglot --option queue_size=4096"
  # the reference's queue of 16384 keys (more candidates for each key's pseudo-shots)
  [psco-screen-queue16384]="$BASE --views omniglot --option queue_size=16384"
  # the reference's views: random resized crop (scale 0.2-1) and horizontal flip, instead of the omniglot preset's
  # milder crop (0.6-1) with rotation, shear and translation
  [psco-screen-crop-flip]="$BASE --views crop_flip --option queue_size=4096"
  # the reference's Conv-4: ceil-mode pooling, 2x2x64 = 256-d features on 28x28 (ours floors to 1x1x64)
  [psco-screen-ceil-pool]="$BASE --views omniglot --option queue_size=4096 --backbone-option pool_padding=same"
  # the reference's optimizer: SGD, momentum 0.9, lr 0.03 x batch/256, weight decay 5e-4 coupled (about 5e-3
  # decoupled, see mssl_tf/training/model.py make_optimizer)
  [psco-screen-sgd]="--batch-size 128 --optimizer sgd --learning-rate 0.015 --weight-decay 5e-3 --option hidden_units=[512] --option projection_units=128 --views omniglot --option queue_size=4096"
  # the reference's heads: projector and predictor 4096 hidden, 256 out
  [psco-screen-wide-heads]="--batch-size 128 --learning-rate 1e-3 --option hidden_units=[4096] --option projection_units=256 --views omniglot --option queue_size=4096"
)
ORDER="psco-screen-queue16384 psco-screen-crop-flip psco-screen-ceil-pool psco-screen-sgd psco-screen-wide-heads
  psco-screen-baseline"
source benchmarks/table_runs.sh  # load, train

validate_row() {  # validate_row NAME: 600 validation episodes, 5-way and 20-way 1-shot, scored by the backbone
  # (nearest prototype, the default) and by the heads (the paper's protocol, --evaluation-option evaluation=heads)
  [ -f $RESULTS/$1-val_20w1s.json ] || $M eval $OUT/$1 --split val --settings 5w1s,20w1s --episodes 600 \
    --results-dir $RESULTS --run-name $1-val >> $OUT/$1.log 2>&1
  grep -E "^[0-9]+-way" $OUT/$1.log | tail -2 | sed "s/^/    val backbone /"
  [ -f $RESULTS/$1-val-heads_20w1s.json ] || $M eval $OUT/$1 --split val --settings 5w1s,20w1s --episodes 600 \
    --evaluation-option evaluation=heads --results-dir $RESULTS --run-name $1-val-heads >> $OUT/$1.log 2>&1
  grep -E "^[0-9]+-way" $OUT/$1.log | tail -2 | sed "s/^/    val heads /"
}

for name in ${@:-$ORDER}; do
  train $name && validate_row $name
done
echo "=== done $(date -u +%T)"
