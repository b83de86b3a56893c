#!/bin/bash
# Issue 16's table: few-shot sentence classification on WordNet 3.0 (`apt-get install wordnet-base`; classes are
# hypernym synsets, examples their hyponyms' definitions, split by class: mssl_tf/data/wordnet.py), 5-way 1- and
# 5-shot, 600 test episodes (15 queries), 95% interval. Rows: a bag-of-words floor and the untrained Transformer
# (no training), SimCSE alone, ProtoNet supervised, ProtoNet started from the SimCSE encoder, and an unsupervised
# meta-learner (ProtoNet on augmentation tasks made of word-deleted, cropped views of one unlabeled sentence).
# Trained rows: 10 minutes of training time each (validation excluded), seed 0, one after another; the self-
# supervised and unsupervised rows train on the `unlabeled` split (every WordNet definition and example sentence
# except the val and test classes' examples), the supervised rows on `train`. Resumable like families_table.sh:
# a killed training continues from its backup when run again; a record that exists is skipped.
# Usage: bash benchmarks/text_table.sh [run:RUN | train:RUN | test:RUN ...]   (no argument: every row in order)
set -u
set -f
cd "$(dirname "$0")/.."
M=${MSSL_TF:-.venv/bin/mssl-tf}
OUT=runs/text
RESULTS=benchmarks/results
COMMON="--dataset wordnet --minutes 10 --steps 1000000 --steps-per-epoch 250 --validate-episodes 200 --seed 0"
COMMON="$COMMON --lr-schedule cosine"
TRANSFORMER="--backbone transformer"  # 2 blocks, 128 wide, 4 heads, 64 WordPiece tokens of an 8,000-token vocabulary
EPISODES="--ways 20 --shots 5 --queries 5"
mkdir -p $OUT

declare -A FLAGS=(
  [bag-of-words-wordnet-untrained]="--method protonet --backbone bag_of_words --steps 0"
  [random-transformer-wordnet-untrained]="--method simcse $TRANSFORMER --split unlabeled --steps 0"
  [simcse-transformer-wordnet-unsupervised-10min]="--method simcse $TRANSFORMER --split unlabeled --batch-size 128"
  [protonet-transformer-wordnet-supervised-10min]="--method protonet $TRANSFORMER $EPISODES"
  [simcse-then-protonet-transformer-wordnet-10min]="--method protonet $TRANSFORMER $EPISODES --init-from $OUT/simcse-transformer-wordnet-unsupervised-10min"
  [protonet-augmentation-tasks-transformer-wordnet-unsupervised-10min]="--method protonet $TRANSFORMER --split unlabeled --tasks augmentation --views text --ways 20 --shots 1 --queries 3"
)
ORDER="bag-of-words-wordnet-untrained random-transformer-wordnet-untrained simcse-transformer-wordnet-unsupervised-10min
  protonet-transformer-wordnet-supervised-10min simcse-then-protonet-transformer-wordnet-10min
  protonet-augmentation-tasks-transformer-wordnet-unsupervised-10min"
source benchmarks/table_runs.sh  # load, train

test_row() {  # test_row NAME: 600 test episodes, 5-way 1-shot and 5-shot
  local name=$1 setting
  echo "=== test $name $(date -u +%T) load $(load)"
  for setting in 5w1s 5w5s; do
    [ -f $RESULTS/${name}_$setting.json ] || $M eval $OUT/$name --settings $setting --episodes 600 \
      --results-dir $RESULTS --run-name $name >> $OUT/$name.log 2>&1
  done
  grep -E "^[0-9]+-way" $OUT/$name.log | tail -2 | sed "s/^/    /"
}

[ $# -eq 0 ] && set -- $(for name in $ORDER; do echo run:$name; done)
for phase in "$@"; do
  case $phase in
    train:*) train ${phase#train:} ;;
    test:*) test_row ${phase#test:} ;;
    run:*) train ${phase#run:} && test_row ${phase#run:} ;;
    *) echo "unknown phase $phase (run:RUN, train:RUN or test:RUN)"; exit 2 ;;
  esac
done
echo "=== done $(date -u +%T)"
