#!/bin/bash
# Issue 4's table: every meta-self-supervised family and task constructor, 10 minutes of training each, run one
# after another on an otherwise idle machine, then evaluated on the Vinyals test split (records in
# benchmarks/results/). Needs the MoCo and BYOL encoders of the self-supervised table (benchmarks/README.md).
# Usage: bash benchmarks/meta_ssl_table.sh [RUN ...]   (no argument: all runs)
set -u
cd "$(dirname "$0")/.."
M=${MSSL_TF:-.venv/bin/mssl-tf}
OUT=runs/meta_ssl
SSL=runs/ssl
COMMON="--minutes 10 --steps 100000 --steps-per-epoch 250 --validate-episodes 200 --seed 0"
AUGMENTATION="--tasks augmentation --views omniglot --ways 50 --shots 1 --queries 3"
MAML="--ways 5 --shots 1 --queries 5 --inner-steps 1 --evaluation-inner-steps 3 --inner-learning-rate 0.4 --halve-every 0"
mkdir -p $OUT

run() {  # run NAME SETTINGS "EVAL FLAGS" -- TRAIN FLAGS...
  local name=$1 settings=$2 extra=$3
  shift 4
  echo "=== $name $(date +%T)"
  $M train "$@" $COMMON --output $OUT/$name > $OUT/$name.log 2>&1 || { echo "training failed: $OUT/$name.log"; return; }
  $M eval $OUT/$name --settings $settings --episodes 600 $extra --results-dir benchmarks/results --run-name $name >> $OUT/$name.log 2>&1
  for protocol in knn linear; do
    $M eval $OUT/$name --protocol $protocol --results-dir benchmarks/results --run-name $name >> $OUT/$name.log 2>&1
  done
  grep -E "^[0-9]+-way|^knn|^linear|^trained|^clustered" $OUT/$name.log | tail -8
}

wanted() { [ $# -eq 0 ] || [[ " $* " == *" $NAME "* ]]; }

NAME=protonet-augmentation-tasks-conv4-omniglot-unsupervised-10min
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method protonet $AUGMENTATION
NAME=maml-mixture-tasks-conv4-omniglot-unsupervised-10min  # optimization-based: transformation + instance tasks
wanted "$@" && run $NAME 5w1s,5w5s "--evaluation-inner-steps 10" -- --method maml --meta-batch 16 $MAML \
  --tasks mixture --task-option mixture=augmentation,transformation
NAME=memory-augmentation-tasks-conv4-omniglot-unsupervised-10min  # memory-based
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method memory $AUGMENTATION
NAME=hypernetwork-augmentation-tasks-conv4-omniglot-unsupervised-10min  # network-based
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method hypernetwork $AUGMENTATION --inner-steps 1
NAME=protonet-cactus-moco-tasks-conv4-omniglot-unsupervised-10min  # CACTUs: k-means clusters of MoCo embeddings
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method protonet --tasks clusters --ways 50 --shots 1 \
  --queries 3 --cluster-encoder $SSL/moco-conv4-omniglot-unsupervised-10min --task-option clusters=500 \
  --task-option partitions=10
NAME=byol-then-protonet-augmentation-tasks-conv4-omniglot-unsupervised-10min  # BYOL + meta-learning
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method protonet $AUGMENTATION \
  --init-from $SSL/byol-conv4-omniglot-unsupervised-10min
NAME=byol-protonet-jointly-augmentation-tasks-conv4-omniglot-unsupervised-10min  # BYOL + meta-learning, one encoder
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method byol_protonet $AUGMENTATION --option byol_weight=1 \
  --snapshot-minutes 1,2,5
NAME=protonet-conv4-omniglot-supervised-10min  # the oracle: labels used
wanted "$@" && run $NAME 5w1s,5w5s,20w1s,20w5s "" -- --method protonet --ways 60 --shots 1 --queries 5
NAME=maml-conv4-omniglot-supervised-10min
wanted "$@" && run $NAME 5w1s,5w5s "--evaluation-inner-steps 10" -- --method maml --meta-batch 32 $MAML

# Adaptation: accuracy after 0, 1, 5 (and 10) inner steps or memory write passes, on the same test episodes.
curve() {  # curve NAME SETTINGS STEPS
  [ -f $OUT/$1/model.keras ] || return
  $M eval $OUT/$1 --settings $2 --episodes 600 --adaptation-steps $3 --results-dir benchmarks/results --run-name $1
}
for NAME in maml-mixture-tasks-conv4-omniglot-unsupervised-10min maml-conv4-omniglot-supervised-10min; do
  wanted "$@" && curve $NAME 5w1s 0,1,5,10
done
for NAME in memory-augmentation-tasks-conv4-omniglot-unsupervised-10min \
    hypernetwork-augmentation-tasks-conv4-omniglot-unsupervised-10min; do
  wanted "$@" && curve $NAME 5w1s,20w1s 0,1,5
done
echo "=== done $(date +%T)"
