"""The demo: the run a newcomer builds with one click, decomposed from the sample photos once and published
for everybody (``shared/<demo name>``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import config
from ..runs.names import auto_run_name
from .layout import SHARED

if TYPE_CHECKING:  # the backbones import torch: only when a demo is built
    from ..backbones import Backbone
    from ..data.features import Progress


@dataclass(frozen=True)
class Demo:
    """The run a newcomer builds with one click: every class of the sample photos, published once for all."""

    backbone: str = "efficientnet_lite0"
    images_per_class: int = 20
    k: int = 3
    strategy: str = "optimized"
    n_classes: int = 10
    classes: tuple[str, ...] | None = None  # class folders of the sample photos; None: all of them

    @property
    def name(self) -> str:
        return "demo-" + auto_run_name(self.backbone, self.k, self.strategy, self.n_classes)


DEMO = Demo()


def demo_path(runs_root: str | Path, demo: Demo = DEMO) -> Path:
    return Path(runs_root) / SHARED / demo.name


def build_demo(
    backbone: Backbone, runs_root: str | Path, progress: Progress | None = None, demo: Demo = DEMO, data: str | Path | None = None
) -> Path:
    """Decompose the sample photos as ``demo`` says and publish the run (``shared/<demo name>``); when it
    exists already (another session built it), nothing is computed. Call it inside ``JOBS.turn()``."""
    from ..pipeline import run_decomposition  # the pipeline imports torch models: only when a demo is built
    from ..runs.store import save_once

    return save_once(
        demo_path(runs_root, demo),
        lambda: run_decomposition(
            backbone,
            data or config.SAMPLE_DATA,
            "train",
            classes=list(demo.classes) if demo.classes else None,
            images_per_class=demo.images_per_class,
            k=demo.k,
            strategy=demo.strategy,
            progress=progress,
        ),
    )
