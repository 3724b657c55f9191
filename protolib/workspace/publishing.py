"""Publishing: one of a session's runs moved to ``shared/`` for everybody, with what it needs from the session
(its probe, its uploaded training images) copied along so that it outlives the session."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from ..backbones.probe_models import PROBE_MANIFEST, probe_folder, probe_name
from ..runs import RunError
from ..runs.names import unique_path
from ..runs.schema import MANIFEST, read_run_manifest
from .session import Workspace

PUBLISHING = threading.Lock()


def publish(workspace: Workspace, path: str | Path) -> Path:
    """Make one of the session's runs visible to everybody: it moves to ``shared/`` (a new name when one is
    taken). What it needs from the session goes with it, so it outlives the session: the probe it was made
    from (copied to ``shared/``) and its training images when they were uploads (copied into the run
    folder). Manifest fields that named the session's folders are rewritten. Returns the new folder."""
    path = Path(path)
    if not workspace.owns(path):
        raise RunError("only a run of this session can be published")
    manifest = read_run_manifest(path)
    with PUBLISHING:
        target = unique_path(workspace.shared_runs, path.name)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=_made(workspace.shared_runs)))
        try:
            for item in path.iterdir():
                if item.name != MANIFEST and item.is_file():
                    shutil.copy2(item, tmp / item.name)
            manifest = _published_manifest(workspace, manifest, tmp, target)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    return target


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _published_manifest(workspace: Workspace, manifest: dict, tmp: Path, target: Path) -> dict:
    manifest = dict(manifest)
    backbone = manifest.get("backbone") or ""
    probe = probe_folder(backbone)
    if probe is not None and workspace.owns(probe):
        manifest["backbone"] = probe_name(_publish_probe(workspace, probe))
    if manifest.get("parent") and workspace.owns(manifest["parent"]):
        manifest["parent"] = Path(manifest["parent"]).name
    uploads = workspace.uploads.resolve()
    images: dict[str, list[str]] = {}
    for folder, paths in (manifest.get("images") or {}).items():
        images[folder] = []
        for source in paths:
            if Path(source).resolve().is_relative_to(uploads):
                copy = tmp / "images" / folder / Path(source).name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, copy)
                source = str(target / "images" / folder / Path(source).name)
            images[folder].append(source)
    if images:
        manifest["images"] = images
    if manifest.get("data") and Path(manifest["data"]).resolve().is_relative_to(uploads):
        manifest["data"] = str(target / "images")
    return manifest


def _publish_probe(workspace: Workspace, folder: Path) -> Path:
    """A copy of a private probe in ``shared/`` (the session may go on using its own)."""
    target = unique_path(workspace.shared_runs, folder.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=_made(workspace.shared_runs)))
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        manifest = json.loads((tmp / PROBE_MANIFEST).read_text())
        if manifest.get("data") and Path(manifest["data"]).resolve().is_relative_to(workspace.uploads.resolve()):
            manifest["data"] = Path(manifest["data"]).name  # only its name: the upload folder stays private
        (tmp / PROBE_MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
