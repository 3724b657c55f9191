"""The demo of mistakes one switch fixes: a linear probe of EfficientNet-Lite0 on the sample photos, decomposed
whole, published for everyone.

Why a probe: the 1000-way demo decomposes only its 10 classes, and every one of its held-out mistakes goes to
(or passes) one of the 990 classes that keep their whole rows, which no prototype switch can lower. The probe
is a 10-way model whose every class is decomposed, as in the paper, so each mistake has prototypes to blame.
It reads the same photos as the demo (20 per class), so the backbone's features come from the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import config
from .runs.schema import MANIFEST
from .workspace.layout import SHARED

if TYPE_CHECKING:  # the backbones import torch: only when the demo is built
    from .backbones import Backbone
    from .data.features import Progress

PROBE_NAME = "demo-probe-lite0"  # the published probe (a folder under the shared runs)
RUN_NAME = "demo-probe-lite0-k3"  # the published decomposition of it
IMAGES_PER_CLASS = 20
K = 3


def probe_demo_path(runs_root: str | Path) -> Path:
    return Path(runs_root) / SHARED / RUN_NAME


def build_probe_demo(
    runs_root: str | Path,
    backbone: Backbone,
    progress: Progress | None = None,
    data: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Fit the probe on ``data`` (default: the sample photos), decompose it with k = 3 and publish both; when the
    run exists already (built by another session), nothing is computed. Call it inside ``JOBS.turn()``."""
    from .backbones import load_backbone
    from .backbones.probe_models import probe_name
    from .pipeline import run_decomposition
    from .probe import fit_probe
    from .runs import save_run

    path = probe_demo_path(runs_root)
    if (path / MANIFEST).is_file():
        return path
    data = Path(data or config.SAMPLE_DATA)
    probe_folder = Path(runs_root) / SHARED / PROBE_NAME
    if not probe_folder.is_dir():
        probe = fit_probe(data, backbone, images_per_class=IMAGES_PER_CLASS, cache_dir=cache_dir, progress=progress)
        try:
            probe.save(probe_folder, cache_dir=cache_dir)
        except FileExistsError:  # saved meanwhile by another process: the same probe
            pass
    probed = load_backbone(probe_name(probe_folder), None, backbone.device)
    run = run_decomposition(probed, data, "train", images_per_class=IMAGES_PER_CLASS, k=K, cache_dir=cache_dir, progress=progress)
    try:
        save_run(run, path)
    except FileExistsError:
        pass
    return path
