"""Clean-up: the folders of sessions unused for too long (uploads, private runs) are removed; published runs
never are. A session start triggers it, at most every few minutes per process."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .layout import SESSIONS


def clean_up(
    runs_root: str | Path, uploads_root: str | Path, max_age: float, now: float | None = None, keep: tuple[Path, ...] = ()
) -> list[Path]:
    """Remove the session folders (uploads, private runs) not used for ``max_age`` seconds (their mtime,
    which a session refreshes on every use: ``Workspace.touch``), except those in ``keep``. Returns them."""
    now = time.time() if now is None else now
    removed = []
    kept = {Path(k) for k in keep}
    for parent in (Path(uploads_root), Path(runs_root) / SESSIONS):
        try:
            folders = [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            continue
        for folder in folders:
            try:
                age = now - folder.stat().st_mtime
            except OSError:
                continue
            if age > max_age and folder not in kept:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


@dataclass
class _Throttle:
    every: float = 600.0  # seconds between two clean-ups of one process
    last: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


CLEAN_UP = _Throttle()


def clean_up_now_and_then(runs_root: str | Path, uploads_root: str | Path, max_age: float, now: float | None = None) -> list[Path]:
    """``clean_up``, unless this process did one in the last ``CLEAN_UP.every`` seconds (sessions start often)."""
    now = time.time() if now is None else now
    with CLEAN_UP.lock:
        if now - CLEAN_UP.last < CLEAN_UP.every:
            return []
        CLEAN_UP.last = now
    return clean_up(runs_root, uploads_root, max_age, now)
