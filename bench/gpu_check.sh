#!/usr/bin/env bash
# Issue 20's GPU figures in one command (see bench/gpu_check.py):
#   bash bench/gpu_check.sh --multi30k DIR [--work DIR] [--dry-run]
# Runs with $PYTHON (default: .venv/bin/python if there, else the machine's python3). Wheels in
# .whl/ (e.g. sacremoses, where the machine lacks it) are installed into a folder of their own first.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/aiayn-wheels .whl/*.whl
  export PYTHONPATH=/tmp/aiayn-wheels${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$python" bench/gpu_check.py "$@"
