#!/usr/bin/env bash
# A finished Multi30k run's choices, made on the validation set only, then test_2016_flickr scored
# once (issue: translation quality; every run is reported in docs/results/multi30k_en_de.md):
#   bash bench/multi30k_choose.sh RUN SRC TGT          # validation: checkpoint, then alpha
#   bash bench/multi30k_choose.sh RUN SRC TGT test     # and the test set, greedy and beam 4, once
#   bash bench/multi30k_choose.sh RUN1,RUN2 SRC TGT [test]   # an ensemble of runs (aiayn --ensemble)
# RUN is a run folder of `aiayn train --multi30k SRC-TGT`; MULTI30K (default: the project's copy
# beside it) holds the raw files. Checkpoints: the last, and the averages of the last 5 and 10
# (RUN_avg5, RUN_avg10, replaced); the one with the highest greedy validation sacreBLEU is taken
# (each run's own, for an ensemble), then the beam 4 length penalty with the highest validation
# sacreBLEU among those whose brevity penalty reaches 0.98 (the issue's floor; none reaching it:
# the least short). Writes RUN_valid.log (each run's), NAME_alpha.log, and with `test` NAME_test.log
# and the translations NAME_test.{greedy,beam4}.TGT, where NAME is RUN, or RUN1_ensemble_RUN2 for two;
# a second `test` is refused while NAME_test.log exists (the test set is scored once; after a
# failed `test`, read what it printed and remove NAME_test.log to try again).
set -euo pipefail
usage="usage: bash bench/multi30k_choose.sh RUN[,RUN...] SRC TGT [test]"
[ $# -ge 3 ] && [ $# -le 4 ] && { [ $# = 3 ] || [ "$4" = test ]; } || { echo "$usage" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
IFS=, read -ra given <<< "$1,"
RUNS=()
for run in "${given[@]}"; do
  [ -n "$run" ] || { echo "$usage" >&2; exit 2; }
  RUNS+=("$(realpath -s -m --relative-to="$repo" "${run%/}")")
done
mapfile -t RUNS < <(printf '%s\n' "${RUNS[@]}" | sort)  # one name per ensemble, whatever the order given
[ "$(printf '%s\n' "${RUNS[@]}" | uniq | wc -l)" = ${#RUNS[@]} ] || { echo "multi30k_choose.sh: a run given twice" >&2; exit 2; }
SRC=$2 TGT=$3
NAME=${RUNS[0]}  # an ensemble's: RUN1_ensemble_RUN2+RUN3 (folder names; the runs sorted)
[ ${#RUNS[@]} = 1 ] || NAME=${RUNS[0]}_ensemble_$(for run in "${RUNS[@]:1}"; do basename "$run"; done | paste -sd+)
MULTI30K=$(realpath -m "${MULTI30K:-$repo/../shared/data/multi30k}")
cd "$repo"
for run in "${RUNS[@]}"; do
  [ -d "$run/checkpoints" ] || { echo "multi30k_choose.sh: $run: not a training run (no checkpoints/)" >&2; exit 2; }
done
if [ "${4:-}" = test ] && [ -e "${NAME}_test.log" ]; then
  echo "multi30k_choose.sh: ${NAME}_test.log exists: the test set of this run is scored already" >&2; exit 2
fi
ALPHAS="0.6 1.0 1.4 1.8 2.2 3 4"
evaluate() {  # aiayn evaluate ARGS, the data folder's path printed as MULTI30K; its errors shown, progress bars not
  local err status=0
  err=$(mktemp)
  .venv/bin/aiayn evaluate "$@" 2>"$err" | sed "s|$MULTI30K|MULTI30K|g" || status=$?
  [ $status = 0 ] || tr '\r' '\n' < "$err" | grep -v "translating:" >&2 || true
  rm -f "$err"
  return $status
}
sacrebleu() { sed -n 's/^sacreBLEU  *BLEU = \([0-9.]*\).*/\1/p' | head -1; }

choose_checkpoint() {  # RUN: its checkpoint with the highest greedy validation sacreBLEU, into $best
  local run=$1 checkpoint out score best_bleu=-1
  for n in 5 10; do .venv/bin/aiayn average "$run" --last $n --out "${run}_avg$n" --overwrite >/dev/null; done
  best=""
  : > "${run}_valid.log"
  for checkpoint in "$(ls -d "$run"/checkpoints/step_* | tail -1)" "${run}_avg5" "${run}_avg10"; do
    echo "== $checkpoint greedy val" | tee -a "${run}_valid.log"
    out=$(evaluate --checkpoint "$checkpoint" --beam 1 --src "$MULTI30K/val.$SRC.gz" --ref "$MULTI30K/val.$TGT.gz")
    echo "$out" | tee -a "${run}_valid.log"
    score=$(echo "$out" | sacrebleu)
    [ -n "$score" ] || { echo "multi30k_choose.sh: no sacreBLEU line for $checkpoint" >&2; exit 1; }
    if awk -v a="$score" -v b="$best_bleu" 'BEGIN { exit !(a > b) }'; then best=$checkpoint best_bleu=$score; fi
  done
  echo "chosen on validation: $best (greedy sacreBLEU $best_bleu)" | tee -a "${run}_valid.log"
}

chosen=()
for run in "${RUNS[@]}"; do choose_checkpoint "$run"; chosen+=("$best"); done
models=(--checkpoint "${chosen[0]}")
[ ${#chosen[@]} = 1 ] || models+=(--ensemble "${chosen[@]:1}")
evaluate "${models[@]}" --beam 4 --alphas $ALPHAS --min-brevity-penalty 0.98 --src "$MULTI30K/val.$SRC.gz" \
  --ref "$MULTI30K/val.$TGT.gz" | tee "${NAME}_alpha.log"
alpha=$(sed -n 's/^best alpha on [^:]*: \([0-9.]*\)[ ;].*/\1/p' "${NAME}_alpha.log")
[ -n "$alpha" ] || { echo "multi30k_choose.sh: no alpha chosen in ${NAME}_alpha.log" >&2; exit 1; }
[ "${4:-}" = test ] || exit 0
: > "${NAME}_test.log"
for name in greedy beam4; do
  decoding="--beam 1"; [ $name = greedy ] || decoding="--beam 4 --alpha $alpha"
  echo "== ${chosen[*]} $decoding test_2016_flickr" | tee -a "${NAME}_test.log"
  evaluate "${models[@]}" $decoding --src "$MULTI30K/test_2016_flickr.$SRC.gz" \
    --ref "$MULTI30K/test_2016_flickr.$TGT.gz" --hyp "${NAME}_test.$name.$TGT" | tee -a "${NAME}_test.log"
done
