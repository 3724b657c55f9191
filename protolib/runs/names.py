"""Names of runs (and of the other folders saved beside them): safe folder names, new names that never
overwrite, readable defaults, and the run folder a path would be written inside."""

from __future__ import annotations

import re
from pathlib import Path

from ..backbones.probe_models import probe_folder
from .schema import MANIFEST, TENSORS

_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """``text`` as one file or folder name: each run of characters other than letters, digits, '.', '-'
    and '_' becomes '-' (so no path separators, no '..' alone); ValueError when nothing is left."""
    cleaned = _NOT_IN_NAMES.sub("-", text.strip()).strip("-.")
    if not cleaned:
        raise ValueError(f"{text!r} cannot be a name: use letters, digits, '.', '-' or '_'")
    return cleaned[:100]


def unique_path(root: str | Path, name: str) -> Path:
    """``root/<safe name>``, or ``-2``, ``-3``... appended when taken: a new folder never overwrites another."""
    root, name = Path(root), safe_name(name)
    path, n = root / name, 2
    while path.exists():
        path, n = root / f"{name}-{n}", n + 1
    return path


def short_backbone(name: str) -> str:
    """A backbone's name for run names and captions: a probe by its folder's name, not its full path."""
    probe = probe_folder(name)
    if probe is None:
        return name
    folder = probe.name
    return folder if folder.startswith("probe") else f"probe-{folder}"


def auto_run_name(backbone: str, k: int, strategy: str, n_classes: int) -> str:
    """A readable default name, e.g. ``efficientnet_lite0-10cls-k3-optimized``."""
    return safe_name(f"{short_backbone(backbone)}-{n_classes}cls-k{k}-{strategy}")


def run_folder_above(path: str | Path) -> Path | None:
    """The run folder that ``path`` would be written inside, or None: only ``save_run`` writes in a run folder
    (a command's output there would change a run, or a published run, behind its manifest)."""
    for parent in Path(path).expanduser().absolute().parents:
        if (parent / MANIFEST).is_file() and (parent / TENSORS).is_file():
            return parent
    return None
