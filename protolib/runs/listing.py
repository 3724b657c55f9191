"""The run folders under a root, newest first, as a listing many people share shows them: each with its
manifest, or why it is damaged (no tensor data is read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..files import recover_folder
from .checks import manifest_problem, tensors_header_problem
from .schema import MANIFEST, RunError, read_run_manifest


def list_runs(root: str | Path, manifest: str = MANIFEST) -> list[Path]:
    """Run folders directly under ``root`` (folders holding ``manifest``), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    recover_folder(root)  # saves interrupted meanwhile: their old run comes back, their leftovers go
    found = [p for p in root.iterdir() if (p / manifest).is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: _mtime(p / manifest), reverse=True)


def _mtime(path: Path) -> float:
    """A file's mtime, or 0 when it went away meanwhile (another process removed the run)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class SavedRun:
    """A run folder as a listing shows it: its manifest, or why it cannot be read (no tensors are read)."""

    path: Path
    manifest: dict | None  # None: damaged, see ``problem``
    problem: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def modified(self) -> float:
        """When its manifest was last written (a rewritten run is a new version for caches)."""
        return (self.path / MANIFEST).stat().st_mtime


def saved_runs(root: str | Path) -> list[SavedRun]:
    """The run folders directly under ``root``, newest first, each with its manifest or why it is damaged."""
    listed = []
    for path in list_runs(root):
        try:
            listed.append(SavedRun(path, read_run_manifest(path)))
        except RunError as exc:
            listed.append(SavedRun(path, None, str(exc)))
    return listed


def checked_runs(root: str | Path) -> list[SavedRun]:
    """``saved_runs``, with the runs whose manifest fails ``manifest_problem`` listed as damaged, and a
    folder that vanishes or cannot be read while it is listed skipped: safe for a listing many people share."""
    try:
        listed = saved_runs(root)
    except OSError:
        return []
    checked = []
    for run in listed:
        problem = manifest_problem(run.manifest) if run.manifest is not None else None
        if run.manifest is not None and not problem:
            problem = tensors_header_problem(run.path, run.manifest)
        checked.append(SavedRun(run.path, None, f"{run.path.name}: damaged run ({problem})") if problem else run)
    return checked
