"""Small helpers several test modules share (not a test module, so that any of them can import it): the command
line run in-process, a wait with a deadline, a randomly initialised backbone made non-degenerate."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from torch import nn

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


def make_nontrivial(backbone, x):
    """Random-init logits are degenerate (ViT's head is zeros, EfficientNet's features ~1e-13):
    calibrate BatchNorm statistics on ``x`` and draw a random head, so exactness checks mean something."""
    bns = [m for m in backbone.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: one batch sets the statistics exactly
    if bns:
        backbone.model.train()
        with torch.no_grad():
            backbone.model(x)
        backbone.model.eval()
    nn.init.normal_(backbone.head.weight, std=backbone.head.in_features**-0.5)
    nn.init.normal_(backbone.head.bias)
