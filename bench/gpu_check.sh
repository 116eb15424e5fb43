#!/usr/bin/env bash
# Issue 20's GPU figures in one command (see bench/gpu_check.py):
#   bash bench/gpu_check.sh --multi30k DIR [--work DIR] [--dry-run]
# Runs with $PYTHON (default: the checkout's .venv/bin/python if there, else the machine's python3).
# Wheels in the checkout's .whl/ (e.g. sacremoses, where the machine lacks it) are installed into a
# new temporary folder first. Relative paths are the caller's: the working directory is not changed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$( [ -x "$root/.venv/bin/python" ] && echo "$root/.venv/bin/python" || echo python3 )}
if compgen -G "$root/.whl/*.whl" >/dev/null; then
  wheels=$(mktemp -d -t aiayn-wheels.XXXXXX)
  trap 'rm -rf "$wheels"' EXIT
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$wheels" "$root"/.whl/*.whl
  export PYTHONPATH=$wheels${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
"$python" "$root/bench/gpu_check.py" "$@"
