"""Small helpers several test modules share (not a test module, so that any of them can import it)."""

from __future__ import annotations

from protolib.cli import main

TENCH, SPRINGER = "n01440764", "n02102040"


def cli(capsys, *argv) -> tuple[int, str]:
    """Run the command line; its exit code and what it wrote to stderr, which never holds a traceback."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err
