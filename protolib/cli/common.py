"""What several commands share: progress bars on stderr, the run of ``--run`` with its model, and a JSON
file of figures written atomically."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backbones import Backbone
from ..files import atomic_path
from ..runs import Run


class StageProgress:
    """One tqdm bar per stage on stderr; quiet when stderr is not a terminal unless asked."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bars: dict[str, tqdm] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            unit = {"features": "img", "report": "section"}.get(stage, "class")
            bar = self._bars[stage] = self._tqdm(total=total, desc=f"{stage:<10}", unit=unit, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def run_and_model(args: argparse.Namespace) -> tuple[Run, Backbone]:
    """The run of ``--run`` and the model it was made from, on ``--device``."""
    from ..runs import load_run

    run = load_run(args.run)
    return run, run.load_backbone(args.device)


def write_json(figures: dict, target: str | Path) -> Path:
    target = Path(target)  # checked by targets.output_file before the work
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(figures, indent=2))
    return target
