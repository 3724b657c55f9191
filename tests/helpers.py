"""Small helpers several test modules share (not a test module, so that any of them can import it)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from protolib.cli import main

TENCH, SPRINGER = "n01440764", "n02102040"


def cli(capsys, *argv) -> tuple[int, str]:
    """Run the command line; its exit code and what it wrote to stderr, which never holds a traceback."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def wait_until(condition: Callable[[], object], what: str, seconds: float = 10, step: float = 0.01) -> None:
    """Poll ``condition`` until it holds; after ``seconds`` the test fails saying ``what`` it waited for (a wait on
    another thread never hangs the run)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds:g} s for {what}")
        time.sleep(step)
