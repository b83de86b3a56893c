#!/bin/bash
# Issue 12's table: a supervised Omniglot row for every registered meta-learner that had none, under the budget of
# the existing supervised rows (protonet-/maml-conv4-omniglot-supervised-10min): 10 minutes of training time
# (validation time excluded), seed 0, Vinyals train split, run one after another at normal priority (other work on
# the machine at `nice -n 19`; each run's start and end load average is printed). Resumable: a killed training
# continues from its backup (`--backup-dir`) when the same command is run again; a record that exists is skipped.
# Metric learners train like the ProtoNet row (60-way 1-shot 5-query); the fixed-width optimization learners like
# the MAML row (5-way 1-shot 5-query, meta-batch 32), and their evaluation inner steps are chosen on the validation
# split (600 episodes, 5-way 1-shot, 1/3/5/10 steps), never on the test split.
# Usage: bash benchmarks/families_table.sh [run:RUN | train:RUN | val:RUN | valrow:RUN | test:RUN | snapshots:RUN | matching ...]
#   (no argument: the first table's runs; `matching`: its scale chosen on validation, then its row)
# The recorded rows ran from a clean checkout of one commit (MSSL_TF="env PYTHONPATH=<checkout> .venv/bin/mssl-tf"),
# as their records' `commit` says.
set -u
set -f  # flags such as hidden_units=[512] are not file patterns
cd "$(dirname "$0")/.."
M=${MSSL_TF:-.venv/bin/mssl-tf}
OUT=runs/families
RESULTS=benchmarks/results
COMMON="--minutes 10 --steps 100000 --steps-per-epoch 250 --validate-episodes 200 --seed 0"
METRIC="--ways 60 --shots 1 --queries 5"
FIXED_WIDTH="--ways 5 --shots 1 --queries 5 --meta-batch 32 --halve-every 0 --evaluation-inner-steps 3"
AUGMENTATION="--tasks augmentation --views omniglot --ways 50 --shots 1 --queries 3"
AUGMENTATION_5SHOT="--tasks augmentation --views omniglot --ways 20 --shots 5 --queries 3"
PSCO="--batch-size 128 --views omniglot --option queue_size=4096 --option hidden_units=[512] --option projection_units=128 --learning-rate 1e-3"
mkdir -p $OUT

declare -A FLAGS=(
  [matching-conv4-omniglot-supervised-10min]="--method matching $METRIC"
  [siamese-conv4-omniglot-supervised-10min]="--method siamese $METRIC"
  [relation-conv4-omniglot-supervised-10min]="--method relation $METRIC"
  [fomaml-conv4-omniglot-supervised-10min]="--method fomaml $FIXED_WIDTH --inner-steps 1 --inner-learning-rate 0.4"
  [metasgd-conv4-omniglot-supervised-10min]="--method metasgd $FIXED_WIDTH --inner-steps 1 --inner-learning-rate 0.4"
  [anil-conv4-omniglot-supervised-10min]="--method anil $FIXED_WIDTH --inner-steps 1 --inner-learning-rate 0.4"
  [reptile-conv4-omniglot-supervised-10min]="--method reptile $FIXED_WIDTH --inner-steps 5 --inner-learning-rate 0.1"
  [imaml-conv4-omniglot-supervised-10min]="--method imaml $FIXED_WIDTH --inner-steps 5 --inner-learning-rate 0.1"
  # The MAML family at any width (--option head=shared): the same training, 20-way cells scored too.
  [maml-shared-head-conv4-omniglot-supervised-10min]="--method maml $FIXED_WIDTH --inner-steps 1 --inner-learning-rate 0.4 --option head=shared"
  [anil-shared-head-conv4-omniglot-supervised-10min]="--method anil $FIXED_WIDTH --inner-steps 1 --inner-learning-rate 0.4 --option head=shared"
  # Relation Networks pooling a class's support by its mean (the default since the 5-shot collapse of the sum row).
  [relation-mean-pooling-conv4-omniglot-supervised-10min]="--method relation $METRIC --option class_pooling=mean"
  [versa-conv4-omniglot-supervised-10min]="--method versa $METRIC"
  # MANN reads a sequence of (image, previous label) pairs; its label input is max_ways wide, so it is trained and
  # scored at 5 ways only (20-way cells empty).
  [mann-conv4-omniglot-supervised-10min]="--method mann --ways 5 --shots 5 --queries 1 --meta-batch 16 --option max_ways=5"
  # Matching Networks' softmax temperature (the cosine scale; 1 in the paper) is chosen on validation by three
  # 3-minute runs (the `matching` phase), then the 10-minute row trains with the chosen scale.
  [matching-scale1-3min]="--method matching $METRIC --minutes 3 --option scale=1"
  [matching-scale10-3min]="--method matching $METRIC --minutes 3 --option scale=10"
  [matching-scale30-3min]="--method matching $METRIC --minutes 3 --option scale=30"
  # The memory network of the zoo card (augmentation tasks, no labels) against the same with a persistent memory of 16
  # learned slots, trained in the same session; and, with 5 shots per class so that the write order matters,
  # parallel against sequential (error-driven) writes in meta-training.
  [memory-augmentation-tasks-conv4-omniglot-unsupervised-10min-rerun]="--method memory $AUGMENTATION"
  [memory-persistent16-augmentation-tasks-conv4-omniglot-unsupervised-10min]="--method memory $AUGMENTATION --option persistent_slots=16"
  [memory-parallel-5shot-augmentation-tasks-conv4-omniglot-unsupervised-10min]="--method memory $AUGMENTATION_5SHOT --option write_order=parallel"
  [memory-sequential-5shot-augmentation-tasks-conv4-omniglot-unsupervised-10min]="--method memory $AUGMENTATION_5SHOT --option write_order=sequential"
  # Unsupervised meta-learning (issue 13): PsCo on Omniglot views, no labels.
  [psco-conv4-omniglot-unsupervised-10min]="--method psco $PSCO --halve-every 1000"
  [psco-cosine-conv4-omniglot-unsupervised-10min]="--method psco $PSCO --lr-schedule cosine"
  # Issue 13's budget: 2 hours of training time, cosine over the whole budget, models kept at 10/30/60/120 minutes for
  # the accuracy-against-time curve (`snapshots:RUN` scores them); validation every 1000 steps to keep its cost small.
  [psco-cosine-conv4-omniglot-unsupervised-120min]="--method psco $PSCO --lr-schedule cosine --minutes 120 --steps 1000000 --steps-per-epoch 1000 --snapshot-minutes 10,30,60,120"
)
# Settings scored on the test split when not the default (5w1s,5w5s,20w1s,20w5s; 5w1s,5w5s for fixed width).
declare -A SETTINGS=(
  [maml-shared-head-conv4-omniglot-supervised-10min]=5w1s,5w5s,20w1s,20w5s
  [anil-shared-head-conv4-omniglot-supervised-10min]=5w1s,5w5s,20w1s,20w5s
  [mann-conv4-omniglot-supervised-10min]=5w1s,5w5s
)
METRIC_RUNS="matching-conv4-omniglot-supervised-10min siamese-conv4-omniglot-supervised-10min
  relation-conv4-omniglot-supervised-10min"
FIXED_WIDTH_RUNS="fomaml-conv4-omniglot-supervised-10min metasgd-conv4-omniglot-supervised-10min
  anil-conv4-omniglot-supervised-10min reptile-conv4-omniglot-supervised-10min imaml-conv4-omniglot-supervised-10min
  maml-shared-head-conv4-omniglot-supervised-10min anil-shared-head-conv4-omniglot-supervised-10min"
MATCHING_SCALES="1 10 30"
source benchmarks/table_runs.sh  # load, train
is_fixed_width() { local run; for run in $FIXED_WIDTH_RUNS; do [ "$run" = "$1" ] && return 0; done; return 1; }

validate() {  # validate NAME: accuracy after 1, 3, 5 and 10 inner steps on 600 validation episodes (5-way 1-shot)
  [ -f $RESULTS/$1-val_5w1s_adaptation.json ] || $M eval $OUT/$1 --split val --settings 5w1s --episodes 600 \
    --adaptation-steps 1,3,5,10 --results-dir $RESULTS --run-name $1-val >> $OUT/$1.log 2>&1
}

validate_row() {  # validate_row NAME: 600 validation episodes, 5-way and 20-way 1-shot (to choose between runs)
  [ -f $RESULTS/$1-val_20w1s.json ] || $M eval $OUT/$1 --split val --settings 5w1s,20w1s --episodes 600 \
    --results-dir $RESULTS --run-name $1-val >> $OUT/$1.log 2>&1
  grep -E "^[0-9]+-way" $OUT/$1.log | tail -2 | sed "s/^/    val /"
}

chosen_steps() {  # chosen_steps NAME: the inner steps with the best validation accuracy (fewer steps on a tie)
  .venv/bin/python - "$RESULTS/$1-val_5w1s_adaptation.json" <<'EOF'
import json, sys
points = json.load(open(sys.argv[1]))["adaptation"]
print(max(points, key=lambda point: (point["accuracy"], -point["steps"]))["steps"])
EOF
}

test_row() {  # test_row NAME: 600 test episodes per setting, then the kNN and linear probes (1692-way; FROZEN_PROTOCOLS="" skips them)
  local name=$1 settings=5w1s,5w5s,20w1s,20w5s extra=""
  if is_fixed_width $name; then
    validate $name
    settings=5w1s,5w5s extra="--evaluation-inner-steps $(chosen_steps $name)"
  fi
  settings=${SETTINGS[$name]:-$settings}
  echo "=== test $name $extra $(date -u +%T) load $(load)"
  for setting in ${settings//,/ }; do
    [ -f $RESULTS/${name}_$setting.json ] || $M eval $OUT/$name --settings $setting --episodes 600 $extra \
      --results-dir $RESULTS --run-name $name >> $OUT/$name.log 2>&1
  done
  for protocol in ${FROZEN_PROTOCOLS-knn linear}; do
    [ -f $RESULTS/${name}_$protocol.json ] || $M eval $OUT/$name --protocol $protocol --results-dir $RESULTS \
      --run-name $name >> $OUT/$name.log 2>&1
  done
  grep -E "^[0-9]+-way|^knn|^linear" $OUT/$name.log | tail -6 | sed "s/^/    /"
}

choose_matching_scale() {  # train the 3-minute runs, score each on 600 validation episodes (5w1s, 20w1s), keep the best sum
  local scale chosen
  for scale in $MATCHING_SCALES; do
    train matching-scale$scale-3min || return 1
    [ -f $RESULTS/matching-scale$scale-3min-val_20w1s.json ] || $M eval $OUT/matching-scale$scale-3min --split val \
      --settings 5w1s,20w1s --episodes 600 --results-dir $RESULTS --run-name matching-scale$scale-3min-val \
      >> $OUT/matching-scale$scale-3min.log 2>&1
  done
  chosen=$(.venv/bin/python - $RESULTS $MATCHING_SCALES <<'EOF'
import json, sys
results, scales = sys.argv[1], sys.argv[2:]
def score(scale):
    return sum(json.load(open(f"{results}/matching-scale{scale}-3min-val_{s}.json"))["accuracy"] for s in ("5w1s", "20w1s"))
print(max(scales, key=score))
EOF
)
  echo "=== matching: scale $chosen chosen on validation"
  FLAGS[matching-conv4-omniglot-supervised-10min]="--method matching $METRIC --option scale=$chosen"
}

test_snapshots() {  # test_snapshots NAME: every kept snapshot on the test settings (the accuracy-against-time curve)
  local name=$1 snapshot mark setting
  for snapshot in $(ls -d $OUT/$name/snapshots/*min | sort -V); do  # ls: `set -f` turns globbing off
    mark=$(basename $snapshot)
    echo "=== test $name at $mark $(date -u +%T) load $(load)"
    for setting in 5w1s 5w5s 20w1s 20w5s; do
      [ -f $RESULTS/$name-at-${mark}_$setting.json ] || $M eval $snapshot --settings $setting --episodes 600 \
        --results-dir $RESULTS --run-name $name-at-$mark >> $OUT/$name.log 2>&1
    done
    grep -E "^[0-9]+-way" $OUT/$name.log | tail -4 | sed "s/^/    /"
  done
}

if [ $# -eq 0 ]; then
  for name in $METRIC_RUNS $FIXED_WIDTH_RUNS; do train $name && test_row $name; done
fi
for phase in "$@"; do
  case $phase in
    train:*) train ${phase#train:} ;;
    val:*) validate ${phase#val:} ;;
    valrow:*) validate_row ${phase#valrow:} ;;
    test:*) test_row ${phase#test:} ;;
    snapshots:*) test_snapshots ${phase#snapshots:} ;;
    run:*) train ${phase#run:} && test_row ${phase#run:} ;;
    matching) choose_matching_scale && train matching-conv4-omniglot-supervised-10min \
      && test_row matching-conv4-omniglot-supervised-10min ;;
    *) echo "unknown phase $phase (run:RUN, train:RUN, val:RUN, valrow:RUN, test:RUN, snapshots:RUN or matching)"; exit 2 ;;
  esac
done
echo "=== done $(date -u +%T)"
