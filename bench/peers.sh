#!/usr/bin/env bash
# Set up the peer harness of ../shared/bench/peers in bench/.peers (a writable copy): its virtual
# environment (torch 2.13.0 first, transformers, CTranslate2, fairseq), its BPE on Multi30k, and
# aiayn installed into that environment so the benchmarks run every system in one process tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
shared=$(cd ../shared && pwd)
mkdir -p bench/.peers
cp -r "$shared/bench/peers/." bench/.peers/
chmod -R u+w bench/.peers
export MULTI30K="$shared/data/multi30k"
(cd bench/.peers && ./run.sh setup prep)
bench/.peers/.venv/bin/pip install -q --no-deps --no-build-isolation -e "$root"
bench/.peers/.venv/bin/pip install -q sacremoses
echo "peer harness ready in bench/.peers"
