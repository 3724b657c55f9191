#!/usr/bin/env bash
# Create .venv, install the pinned requirements (torch and torchvision come from the local disk), then this
# project itself in editable mode (the `protoscope` command; the library importable from any folder).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip "setuptools>=69" wheel  # what builds this project
.venv/bin/python -m pip install -q -r requirements.txt
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
