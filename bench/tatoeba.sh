#!/usr/bin/env bash
# Tatoeba English-German (161,225 pairs), de->en, through prepare + train, preset small, 60 minutes of
# training on this CPU; dev BLEU greedy and beam 4, curves in docs/. ~70 minutes: run it with nohup.
#   nohup bash bench/tatoeba.sh > bench/out/tatoeba.stdout 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
T=$(cd ../shared/data/tatoeba-de-en && pwd)
A=.venv/bin/aiayn
mkdir -p bench/out
$A prepare --out bench/out/tatoeba_data --overwrite --train-src "$T/train.de.gz" --train-tgt "$T/train.en.gz" \
  --valid-src "$T/dev.de.gz" --valid-tgt "$T/dev.en.gz" --vocab-size 8000
$A train --out bench/out/tatoeba --overwrite --data bench/out/tatoeba_data --source-lang de --target-lang en \
  --preset small --batch-tokens 9000 --warmup 400 --lr-scale 0.4 --time-budget 60 --eval-every 500 \
  --save-every 500 --keep-last 5 --bf16 > bench/out/tatoeba.log 2>&1
$A plot bench/out/tatoeba --out docs/tatoeba_curves.png
$A average bench/out/tatoeba --last 5
for checkpoint in "$(ls -d bench/out/tatoeba/checkpoints/step_* | tail -1)" bench/out/tatoeba/checkpoints/average; do
  for beam in 1 4; do
    $A evaluate --checkpoint "$checkpoint" --src "$T/dev.de.gz" --ref "$T/dev.en.gz" --beam $beam 2>/dev/null \
      | sed "s|^|[$(basename "$checkpoint") beam $beam] |"
  done
done | tee bench/out/tatoeba_eval.log
