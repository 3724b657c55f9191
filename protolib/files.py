"""Artifacts on disk: atomic writes (a file or folder appears complete or not at all, never
half-written), and the one reader of the JSON manifests that describe runs and probes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or not of the expected format."""


def read_manifest(path: str | Path, format: str | tuple[str, ...]) -> dict:
    """The JSON object at ``path``, checked to be a mapping whose ``format`` is ``format`` (or one of them)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ManifestError(f"{path.parent} has no {path.name}") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object but a {type(manifest).__name__}")
    if manifest.get("format") not in ((format,) if isinstance(format, str) else format):
        raise ManifestError(f"{path}: unknown format {manifest.get('format')!r} (expected {format})")
    return manifest


class TargetRefused(ValueError):
    """An output path that is never written: a symbolic link, a folder, a device, or an existing file
    without ``--overwrite``."""


def _not_regular(target: Path) -> str | None:
    if target.is_symlink():
        return "is a symbolic link"
    if target.exists() and not target.is_file():
        return "is a folder" if target.is_dir() else "is not a regular file (a device, a pipe or a socket)"
    return None


def check_target(target: str | Path, overwrite: bool = False, option: str = "--out") -> Path:
    """``target`` when a command may write it: refused (TargetRefused, naming ``option``) when it is a symbolic
    link or not a regular file, whatever ``overwrite`` says, or when it exists and ``overwrite`` is not given.
    Checked before any work, and again by ``atomic_path`` at the moment of writing."""
    target = Path(target)
    why = _not_regular(target)
    if why:
        raise TargetRefused(f"{option} {target} {why}: it is never written, even with --overwrite")
    if target.exists() and not overwrite:
        raise TargetRefused(f"{option} {target} already exists; pass --overwrite to replace it")
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise TargetRefused(f"{option} {target}: {parent} is not a folder")
    return target


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename.
    A symbolic link or a non-regular file at ``target`` is never replaced (TargetRefused)."""
    target = Path(target)
    if _not_regular(target):
        raise TargetRefused(f"{target} {_not_regular(target)}: it is not replaced")
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


def _tmp_dirs(target: Path) -> list[Path]:
    """The temporary folders ``atomic_dir`` made beside ``target`` (``.<name>.<random>.tmp``)."""
    try:
        return [
            p
            for p in target.parent.glob(f".{glob_escape(target.name)}.*.tmp")
            if p.is_dir() and not p.is_symlink() and "." not in p.name[len(target.name) + 2 : -4]
        ]
    except OSError:
        return []


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextmanager
def save_lock(target: Path) -> Iterator[bool]:
    """Hold ``.<name>.lock`` beside ``target`` (``flock``): one save, or one recovery, of a folder at a time.
    Yields False, holding nothing, when another process holds it. The lock file is removed on release, so
    nothing is left beside the folder; a lock taken on a file removed meanwhile counts as not taken."""
    lock = target.with_name(f".{target.name}.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except (BlockingIOError, FileNotFoundError):
            pass
        yield held
    finally:
        if held:
            os.unlink(lock)  # before the release: a waiter that opened it sees a removed file, not a free lock
        os.close(fd)


def _recover_locked(target: Path) -> bool:
    """With the save lock held: bring back the old folder of a replacement interrupted between its two
    renames, and remove what interrupted saves left (their temporary folders, a stale old copy)."""
    recovered = False
    if not target.exists() and _old(target).is_dir():
        os.replace(_old(target), target)
        recovered = True
    if _old(target).is_dir():
        shutil.rmtree(_old(target), ignore_errors=True)
    for tmp in _tmp_dirs(target):  # no save of target runs while we hold its lock: these were abandoned
        shutil.rmtree(tmp, ignore_errors=True)
    return recovered


def recover_swap(target: str | Path) -> bool:
    """Finish a replacement that was interrupted between its two renames (the old folder was moved
    aside, the new one not yet in place): the old folder comes back, and the temporary folders of
    interrupted saves are removed. True when one was recovered. Does nothing while a save of ``target``
    runs, or where the parent cannot be written."""
    target = Path(target)
    if not (_old(target).is_dir() or _tmp_dirs(target)):
        return False
    try:
        with save_lock(target) as held:
            return _recover_locked(target) if held else False
    except OSError:
        return False


def recover_folder(parent: str | Path) -> list[Path]:
    """``recover_swap`` for every folder of ``parent`` an interrupted save left (``.<name>.old`` or
    ``.<name>.<random>.tmp``): called when ``parent`` is listed, so a run never vanishes from a listing."""
    parent = Path(parent)
    try:
        hidden = [p.name for p in parent.iterdir() if p.name.startswith(".") and p.is_dir()]
    except OSError:
        return []
    names = {n[1:-4] for n in hidden if n.endswith(".old")} | {n[1:-4].rpartition(".")[0] for n in hidden if n.endswith(".tmp")}
    return [parent / name for name in sorted(names) if name and recover_swap(parent / name)]


@contextmanager
def atomic_dir(target: str | Path, overwrite: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it becomes ``target``.

    With ``overwrite``, an existing ``target`` is replaced only when it is empty or holds ``marker``
    (the manifest of what is written: a folder of the user's is never deleted by mistake). A symbolic
    link is never replaced. One save of a folder at a time: another save of the same folder meanwhile
    is refused (FileExistsError) rather than interleaved.
    """
    target = Path(target)
    if target.is_symlink():
        raise TargetRefused(f"{target} is a symbolic link: it is never written, even with --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    with save_lock(target) as held:
        if not held:
            raise FileExistsError(f"{target} is being written by another save right now; nothing was written (try again)")
        _recover_locked(target)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} already exists; choose another --out or remove it")
        if target.exists() and (not target.is_dir() or (marker and any(target.iterdir()) and not (target / marker).is_file())):
            raise FileExistsError(
                f"{target} exists and is not {'a folder with ' + marker if marker else 'a folder'}: it is not replaced "
                "(choose another --out)"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            yield tmp
            if target.exists():
                old = _old(target)
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
