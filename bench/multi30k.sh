#!/usr/bin/env bash
# Multi30k de->en, preset small, on this CPU, beside the peer harness (issue: training, §5).
#   bash bench/peers.sh                  # once
#   bash bench/multi30k.sh throughput    # training tokens/s, aiayn vs HF Marian, same batches (~3 min)
#   bash bench/multi30k.sh train20       # 20 minutes of training, then test BLEU (greedy, beam 4)
#   bash bench/multi30k.sh train60       # resume the same run to 60 minutes (exact resume), test BLEU, curves
#   bash bench/multi30k.sh decode        # decoding speed beside HF generate and CTranslate2 (same weights)
# Stages over 10 minutes: run them with nohup and read bench/out/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export MULTI30K=$(cd ../shared/data/multi30k && pwd) AIAYN_PEERS=$PWD/bench/.peers
RUN=bench/out/m30k_small
DATA=$MULTI30K
mkdir -p bench/out
test_bleu() {  # $1 = checkpoint, $2 = label
  for beam in 1 4; do
    .venv/bin/aiayn evaluate --checkpoint "$1" --src "$DATA/test_2016_flickr.de.gz" --ref "$DATA/test_2016_flickr.en.gz" \
      --beam $beam --hyp "bench/out/hyp.$2.beam$beam.en" 2>/dev/null | sed "s/^/[$2 beam $beam] /"
  done
}
for stage in "$@"; do
  case $stage in
  throughput) bench/.peers/.venv/bin/python bench/train_throughput.py --size S 2>&1 | grep -v -i warn | tee bench/out/train_throughput.log ;;
  train20)
    .venv/bin/aiayn train --out $RUN --multi30k de-en --data-dir "$DATA" --preset small --vocab-size 8000 \
      --batch-tokens 9000 --warmup 150 --lr-scale 0.3 --time-budget 20 --eval-every 200 --save-every 200 \
      --keep-last 5 --bf16 > bench/out/m30k_small.log 2>&1
    last=$(ls -d $RUN/checkpoints/step_* | tail -1); cp -r "$last" bench/out/m30k_small_20min
    test_bleu bench/out/m30k_small_20min 20min | tee bench/out/test_20min.log ;;
  train60)
    .venv/bin/aiayn train --resume $RUN --time-budget 60 >> bench/out/m30k_small.log 2>&1
    .venv/bin/aiayn plot $RUN --out bench/out/m30k_small_curves.png
    last=$(ls -d $RUN/checkpoints/step_* | tail -1)
    test_bleu "$last" 60min | tee bench/out/test_60min.log
    .venv/bin/aiayn average $RUN --last 5
    test_bleu $RUN/checkpoints/average 60min-avg5 | tee -a bench/out/test_60min.log ;;
  decode) bench/.peers/.venv/bin/python bench/decode.py --checkpoint $RUN 2>&1 | grep -v -i warn | tee bench/out/decode.log ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac
done
