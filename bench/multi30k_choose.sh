#!/usr/bin/env bash
# A finished Multi30k run's choices, made on the validation set only, then test_2016_flickr scored
# once (issue: translation quality; every run is reported in docs/results/multi30k_en_de.md):
#   bash bench/multi30k_choose.sh RUN SRC TGT          # validation: checkpoint, then alpha
#   bash bench/multi30k_choose.sh RUN SRC TGT test     # and the test set, greedy and beam 4, once
# RUN is a run folder of `aiayn train --multi30k SRC-TGT`; MULTI30K (default: the project's copy
# beside it) holds the raw files. Checkpoints: the last, and the averages of the last 5 and 10
# (RUN_avg5, RUN_avg10, replaced); the one with the highest greedy validation sacreBLEU is taken,
# then the beam 4 length penalty with the highest validation sacreBLEU. Writes RUN_valid.log,
# RUN_alpha.log, and with `test` RUN_test.log and the translations RUN_test.{greedy,beam4}.TGT;
# a second `test` is refused while RUN_test.log exists (the test set is scored once; after a
# failed `test`, read what it printed and remove RUN_test.log to try again).
set -euo pipefail
usage="usage: bash bench/multi30k_choose.sh RUN SRC TGT [test]"
[ $# -ge 3 ] && [ $# -le 4 ] && { [ $# = 3 ] || [ "$4" = test ]; } || { echo "$usage" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
RUN=$(realpath -s -m --relative-to="$repo" "${1%/}") SRC=$2 TGT=$3
MULTI30K=$(realpath -m "${MULTI30K:-$repo/../shared/data/multi30k}")
cd "$repo"
[ -d "$RUN/checkpoints" ] || { echo "multi30k_choose.sh: $RUN: not a training run (no checkpoints/)" >&2; exit 2; }
if [ "${4:-}" = test ] && [ -e "${RUN}_test.log" ]; then
  echo "multi30k_choose.sh: ${RUN}_test.log exists: the test set of this run is scored already" >&2; exit 2
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

for n in 5 10; do .venv/bin/aiayn average "$RUN" --last $n --out "${RUN}_avg$n" --overwrite >/dev/null; done
last=$(ls -d "$RUN"/checkpoints/step_* | tail -1)
best="" best_bleu=-1
: > "${RUN}_valid.log"
for checkpoint in "$last" "${RUN}_avg5" "${RUN}_avg10"; do
  echo "== $checkpoint greedy val" | tee -a "${RUN}_valid.log"
  out=$(evaluate --checkpoint "$checkpoint" --beam 1 --src "$MULTI30K/val.$SRC.gz" --ref "$MULTI30K/val.$TGT.gz")
  echo "$out" | tee -a "${RUN}_valid.log"
  score=$(echo "$out" | sacrebleu)
  [ -n "$score" ] || { echo "multi30k_choose.sh: no sacreBLEU line for $checkpoint" >&2; exit 1; }
  if awk -v a="$score" -v b="$best_bleu" 'BEGIN { exit !(a > b) }'; then best=$checkpoint best_bleu=$score; fi
done
echo "chosen on validation: $best (greedy sacreBLEU $best_bleu)" | tee -a "${RUN}_valid.log"
evaluate --checkpoint "$best" --beam 4 --alphas $ALPHAS --src "$MULTI30K/val.$SRC.gz" --ref "$MULTI30K/val.$TGT.gz" \
  | tee "${RUN}_alpha.log"
alpha=$(sed -n 's/^best alpha on [^:]*: \([0-9.]*\);.*/\1/p' "${RUN}_alpha.log")
[ -n "$alpha" ] || { echo "multi30k_choose.sh: no alpha chosen in ${RUN}_alpha.log" >&2; exit 1; }
[ "${4:-}" = test ] || exit 0
: > "${RUN}_test.log"
for name in greedy beam4; do
  decoding="--beam 1"; [ $name = greedy ] || decoding="--beam 4 --alpha $alpha"
  echo "== $best $decoding test_2016_flickr" | tee -a "${RUN}_test.log"
  evaluate --checkpoint "$best" $decoding --src "$MULTI30K/test_2016_flickr.$SRC.gz" \
    --ref "$MULTI30K/test_2016_flickr.$TGT.gz" --hyp "${RUN}_test.$name.$TGT" | tee -a "${RUN}_test.log"
done
