"""The shortcut benchmark's first seed as a demo for the app's Intervene page: built once per server, then
only found."""

from __future__ import annotations

from pathlib import Path

from .. import config
from ..runs.schema import MANIFEST
from ..runs.store import save_once
from ..workspace.layout import SHARED
from .shortcut import Log, decompose_heldout, prepare_model
from .shortcut_config import ShortcutConfig
from .shortcut_splits import prepare_shortcut_data

DEMO_RUN = "shortcut-demo-parts_net"


def build_shortcut_demo(
    runs_root: str | Path, log: Log | None = None, cfg: ShortcutConfig | None = None, demos: str | Path | None = None
) -> tuple[Path, Path]:
    """The benchmark's first seed as a demo for the app, built once per server and shared: the data
    (``<demos>/shortcut/data``, a folder every session may open) and the model trained under the protocol
    (``<demos>/shortcut/seed-0``), decomposed on the held-out split and published as
    ``<runs_root>/shared/shortcut-demo-parts_net``. Later calls only find them. Returns (run folder, data
    folder). Call it inside the job queue: training takes a minute or two on a CPU."""
    cfg, log = cfg or ShortcutConfig(), log or (lambda message: None)
    out = Path(demos or config.demos_dir()) / "shortcut"
    path = Path(runs_root) / SHARED / DEMO_RUN
    data = out / "data"
    if (path / MANIFEST).is_file() and (data / "groups.csv").is_file():
        return path, data
    log("generating the photos")
    data = prepare_shortcut_data(out, cfg)
    backbone, _ = prepare_model(out / "seed-0", data, cfg, 0, log)
    log(f"decomposing the held-out photos, k = {cfg.k}")
    path = save_once(path, lambda: decompose_heldout(backbone, data, cfg, 0, out / "seed-0" / "features"))
    return path, data
