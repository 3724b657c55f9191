"""Artifacts on disk: atomic writes (a file or folder appears complete or not at all, never
half-written), and the one reader of the JSON manifests that describe runs and probes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or not of the expected format."""


def read_manifest(path: str | Path, format: str) -> dict:
    """The JSON object at ``path``, checked to be a mapping whose ``format`` is ``format``."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path.parent} has no {path.name}") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object but a {type(manifest).__name__}")
    if manifest.get("format") != format:
        raise ManifestError(f"{path}: unknown format {manifest.get('format')!r} (expected {format})")
    return manifest


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _old(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def recover_swap(target: str | Path) -> bool:
    """Finish a replacement that was interrupted between its two renames (the old folder was moved
    aside, the new one not yet in place): the old folder comes back. True when one was recovered."""
    target = Path(target)
    if not target.exists() and _old(target).is_dir():
        os.replace(_old(target), target)
        return True
    return False


@contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False, marker: str | None = None):
    """Yield a temporary folder beside ``target``; on success it becomes ``target``.

    With ``overwrite``, an existing ``target`` is replaced only when it is empty or holds ``marker``
    (the manifest of what is written: a folder of the user's is never deleted by mistake).
    """
    target = Path(target)
    recover_swap(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; choose another --out or remove it")
    if target.exists() and (not target.is_dir() or (marker and any(target.iterdir()) and not (target / marker).is_file())):
        raise FileExistsError(
            f"{target} exists and is not {'a folder with ' + marker if marker else 'a folder'}: it is not replaced "
            "(choose another --out)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = _old(target)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
