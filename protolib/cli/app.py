"""``protoscope app``: the browser app, started with Streamlit on this machine."""

from __future__ import annotations

import argparse
import sys

from ..app_files import app_script


def cmd_app(args: argparse.Namespace) -> int:
    import subprocess

    options = list(args.streamlit_args)
    if not any(option.startswith("--server.address") for option in options):
        options += ["--server.address", "localhost"]  # a shared server is a choice: see the README
    command = [sys.executable, "-m", "streamlit", "run", str(app_script()), *options]
    if args.data:
        command += ["--", "--data", args.data]
    return subprocess.call(command)
