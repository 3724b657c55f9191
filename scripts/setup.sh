#!/usr/bin/env bash
# Create .venv and install the pinned requirements (torch and torchvision come from the local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
