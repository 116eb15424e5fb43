#!/usr/bin/env bash
# Training throughput and MFU of preset base on one GPU (see bench/gpu.py): bash bench/gpu.sh [--compile] [--minutes M]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" bench/gpu.py "$@"
