# Sourced by the table scripts (families_table.sh, text_table.sh): the load average, and one resumable training per
# run name. Reads M (the mssl-tf command), OUT (runs directory), COMMON (flags of every run), FLAGS (name → flags).
load() { cut -d' ' -f1-3 /proc/loadavg; }

train() {  # train NAME: skipped when OUT/NAME/model.keras exists; a killed run resumes from OUT/NAME/backup
  local name=$1
  [ -f $OUT/$name/model.keras ] && return
  echo "=== train $name $(date -u +%T) load $(load)"
  $M train $COMMON ${FLAGS[$name]} --output $OUT/$name --backup-dir $OUT/$name/backup > $OUT/$name.log 2>&1 \
    || { echo "training failed: $OUT/$name.log"; return 1; }
  echo "    $(grep '^trained' $OUT/$name.log) — finished $(date -u +%T) load $(load)"
}
