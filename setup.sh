#!/usr/bin/env bash
# Set up aiayn in ./.venv. torch==2.13.0 goes in first: on the project's CPU machines it is a local
# CPU wheel, and installing it before anything that needs torch keeps pip from pulling CUDA wheels.
# Debian's Chromium is installed for the web-page test when missing (as root, with apt-get).
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[dev,interop,family]'
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "note: install Debian's chromium (apt-get install chromium) for the web-page test" >&2
  fi
fi
echo "aiayn is set up in .venv (activate with: . .venv/bin/activate)"
