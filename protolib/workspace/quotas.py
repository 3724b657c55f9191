"""Upload quotas: how much a folder holds, sizes for people, and the error for an upload that does not fit
(``Workspace.upload_room`` and ``Workspace.check_upload`` apply the limits of ``config.sharing_limits``)."""

from __future__ import annotations

import os
from pathlib import Path


class QuotaExceeded(ValueError):
    """An upload would pass the session's or the server's upload quota; the message says how much is left."""


def megabytes(n: int) -> str:
    """A size for people: bytes, kB or MB."""
    if n < 10_000:
        return f"{n} bytes"
    if n < 1024**2:
        return f"{n / 1024:.0f} kB"
    return f"{n / 1024**2:.1f} MB" if n < 10 * 1024**2 else f"{n / 1024**2:.0f} MB"


def folder_bytes(folder: str | Path) -> int:
    """The size of the files under ``folder`` (0 when it does not exist); files that vanish meanwhile are skipped."""
    total, stack = 0, [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total
