#!/usr/bin/env bash
# Set up aiayn in ./.venv. torch==2.13.0 goes in first: on the project's CPU machines it is a local
# CPU wheel, and installing it before anything that needs torch keeps pip from pulling CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev]'
echo "aiayn is set up in .venv (activate with: . .venv/bin/activate)"
