"""``Workspace``: a browser session's place on the server, its private runs and uploads, the runs and probes
it may see, the data folders it may open, its upload room, and error messages that never show its id."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..backbones.probe_models import PROBE_MANIFEST, probe_folder
from ..runs.listing import SavedRun, checked_runs, list_runs
from ..runs.names import safe_name
from ..runs.schema import MANIFEST
from .cleanup import clean_up_now_and_then
from .layout import DATASETS, PHOTOS, SESSIONS, SHARED, new_id
from .quotas import QuotaExceeded, folder_bytes, megabytes


@dataclass(frozen=True)
class Workspace:
    """A browser session's place on the server: its private runs and its uploads."""

    session: str  # never shown: names the private runs folder only
    upload_id: str  # names the upload folder (shown to its own session as its data folder)
    runs_root: Path
    uploads_root: Path

    @classmethod
    def new(cls, environ: Mapping[str, str] | None = None) -> Workspace:
        return cls(new_id(), new_id(), config.runs_dir(environ), config.uploads_dir(environ))

    @classmethod
    def start(cls, environ: Mapping[str, str] | None = None, now: float | None = None) -> Workspace:
        """A new session's workspace; on the way, remove what unused sessions left behind (at most every
        few minutes per process: see ``clean_up_now_and_then``)."""
        workspace = cls.new(environ)
        clean_up_now_and_then(workspace.runs_root, workspace.uploads_root, config.sharing_limits(environ).max_age, now)
        return workspace

    # folders
    @property
    def shared_runs(self) -> Path:
        return self.runs_root / SHARED

    @property
    def private_runs(self) -> Path:
        return self.runs_root / SESSIONS / self.session

    @property
    def uploads(self) -> Path:
        return self.uploads_root / self.upload_id

    @property
    def photos(self) -> Path:
        """The data folder of uploaded photos (``train/<class>/``)."""
        return self.uploads / PHOTOS

    @property
    def datasets(self) -> Path:
        """Where uploaded zips are extracted, one data folder each."""
        return self.uploads / DATASETS

    def forget(self) -> None:
        """Delete the workspace's private runs, probes and uploads ("forget me on this server")."""
        for folder in (self.private_runs, self.uploads):
            shutil.rmtree(folder, ignore_errors=True)

    def touch(self) -> None:
        """Mark the session's folders as used now (clean-up removes those unused for too long)."""
        for folder in (self.private_runs, self.uploads):
            try:
                os.utime(folder)
            except OSError:
                pass

    # runs
    def visible_runs(self) -> dict[str, SavedRun]:
        """The runs this session may see, by the name it shows them under: its own (newest first), then the
        published ones (``shared/``, then the runs folder itself). A published run whose name one of the
        session's runs already has is listed as ``<name> · published``. Damaged runs are listed, as damaged."""
        runs: dict[str, SavedRun] = {}
        for run in checked_runs(self.private_runs):
            runs[run.name] = run
        for run in checked_runs(self.shared_runs) + checked_runs(self.runs_root):
            key, n = run.name, 1
            while key in runs:
                key, n = f"{run.name} · published" + (f" {n}" if n > 1 else ""), n + 1
            runs[key] = run
        return runs

    def owns(self, path: str | Path) -> bool:
        """Whether ``path`` is one of this session's private runs or probes."""
        return Path(path).resolve().parent == self.private_runs.resolve()

    def new_run_path(self, name: str) -> Path:
        """A new folder for a private run or probe named ``name``: ``-2``, ``-3``... when the session has one
        by that name, or a published one does (so the session's lists stay unambiguous)."""
        base, n = safe_name(name), 1
        while True:
            candidate = base if n == 1 else f"{base}-{n}"
            taken = (self.private_runs / candidate, self.shared_runs / candidate, self.runs_root / candidate / MANIFEST)
            if not any(p.exists() for p in taken):
                return self.private_runs / candidate
            n += 1

    def probes(self) -> list[Path]:
        """The probe folders this session may use: its own, then the published ones."""
        return [
            *list_runs(self.private_runs, PROBE_MANIFEST),
            *list_runs(self.shared_runs, PROBE_MANIFEST),
            *list_runs(self.runs_root, PROBE_MANIFEST),
        ]

    def may_use_probe(self, name: str) -> bool:
        """Whether the backbone ``probe:<folder>`` is one of the probes this session may see."""
        probe = probe_folder(name)
        if probe is None:
            return True
        folder = probe.resolve()
        return any(folder == p.resolve() for p in self.probes())

    # data folders
    def data_roots(self) -> list[Path]:
        """The session's own upload folders: data folders under them may be opened by this session only."""
        return [self.photos, self.datasets]

    def check_data_folder(
        self, path: str | Path, extra_roots: Iterable[str | Path] = (), environ: Mapping[str, str] | None = None
    ) -> Path:
        """``config.check_data_folder`` with this session's upload folders allowed too."""
        return config.check_data_folder(path, [*self.data_roots(), *extra_roots], environ)

    # quotas
    def upload_room(self, limits: config.SharingLimits | None = None) -> int:
        """Bytes this session may still upload: the smaller of what is left of its quota and of the server's."""
        limits = limits or config.sharing_limits()
        return max(0, min(limits.session_quota - folder_bytes(self.uploads), limits.total_quota - folder_bytes(self.uploads_root)))

    def check_upload(self, n_bytes: int, limits: config.SharingLimits | None = None) -> int:
        """Raise ``QuotaExceeded`` unless ``n_bytes`` more fit; returns the room left before them."""
        room = self.upload_room(limits)
        if n_bytes > room:
            raise QuotaExceeded(
                f"this would store {megabytes(n_bytes)}, but only {megabytes(room)} of upload space is left "
                f"(per session {megabytes((limits or config.sharing_limits()).session_quota)}); remove earlier uploads first"
            )
        return room

    def redact(self, text: str) -> str:
        """``text`` (an error message) with the session's private folders named for people: the session id
        never reaches a page."""
        replacements = {
            str(self.private_runs): "your runs",
            str(self.private_runs.resolve()): "your runs",
            str(self.runs_root / SESSIONS): "private runs",
            str((self.runs_root / SESSIONS).resolve()): "private runs",
        }
        for old, new in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(old, new)
        return text.replace(self.session, "…")
