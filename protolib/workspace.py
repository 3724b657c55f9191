"""One server, many people: each person's own folders (their workspace), what they may see, quotas,
clean-up, the shared demo run, and a queue so that heavy jobs run one at a time.

Layout (roots from ``protolib.config``)::

    runs_dir()/shared/<run>              published runs and probes, the demo: everybody sees them
    runs_dir()/<run>                     runs an operator put there (e.g. with the CLI): published too
    runs_dir()/sessions/<session>/<run>  a session's private runs and probes
    uploads_dir()/<upload id>/photos     a session's uploaded photos (a data folder)
    uploads_dir()/<upload id>/datasets/  a session's extracted zips (one data folder each)

The session id and the upload id are two independent 128-bit hex strings (``protolib.identity`` derives
them from a person's private link or proxy user; ``Workspace.new`` draws them at random): the session id
names only a folder on the server and is never shown; the upload folder may be shown to its own session
(it is its data folder), and another session that learns it still cannot open it
(``config.check_data_folder``). Nothing here imports Streamlit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import config
from .backbones.probe_models import PREFIX as PROBE_PREFIX
from .backbones.probe_models import PROBE_MANIFEST, probe_name
from .runs import RunError
from .runs.listing import SavedRun, checked_runs, list_runs
from .runs.names import auto_run_name, safe_name, unique_path
from .runs.schema import MANIFEST, read_run_manifest

SHARED, SESSIONS = "shared", "sessions"
PHOTOS, DATASETS = "photos", "datasets"


class QuotaExceeded(ValueError):
    """An upload would pass the session's or the server's upload quota; the message says how much is left."""


def new_id() -> str:
    """An id nobody can guess: 128 random bits."""
    return uuid.uuid4().hex


# -- a session's folders ---------------------------------------------------------------------------
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
        if not name.startswith(PROBE_PREFIX):
            return True
        folder = Path(name.removeprefix(PROBE_PREFIX)).resolve()
        return any(folder == p.resolve() for p in self.probes())

    # data folders
    def data_roots(self) -> list[Path]:
        """The session's own upload folders: data folders under them may be opened by this session only."""
        return [self.photos, self.datasets]

    def check_data_folder(self, path: str | Path, extra_roots=(), environ: Mapping[str, str] | None = None) -> Path:
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


# -- clean-up --------------------------------------------------------------------------------------
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


def clean_up_now_and_then(runs_root, uploads_root, max_age: float, now: float | None = None) -> list[Path]:
    """``clean_up``, unless this process did one in the last ``CLEAN_UP.every`` seconds (sessions start often)."""
    now = time.time() if now is None else now
    with CLEAN_UP.lock:
        if now - CLEAN_UP.last < CLEAN_UP.every:
            return []
        CLEAN_UP.last = now
    return clean_up(runs_root, uploads_root, max_age, now)


# -- publishing ------------------------------------------------------------------------------------
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
    if backbone.startswith(PROBE_PREFIX) and workspace.owns(Path(backbone.removeprefix(PROBE_PREFIX))):
        manifest["backbone"] = probe_name(_publish_probe(workspace, Path(backbone.removeprefix(PROBE_PREFIX))))
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


# -- the demo ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Demo:
    """The run a newcomer builds with one click: every class of the sample photos, published once for all."""

    backbone: str = "efficientnet_lite0"
    images_per_class: int = 20
    k: int = 3
    strategy: str = "optimized"
    n_classes: int = 10
    classes: tuple[str, ...] | None = None  # class folders of the sample photos; None: all of them

    @property
    def name(self) -> str:
        return "demo-" + auto_run_name(self.backbone, self.k, self.strategy, self.n_classes)


DEMO = Demo()


def demo_path(runs_root: str | Path, demo: Demo = DEMO) -> Path:
    return Path(runs_root) / SHARED / demo.name


def build_demo(backbone, runs_root: str | Path, progress=None, demo: Demo = DEMO, data: str | Path | None = None) -> Path:
    """Decompose the sample photos as ``demo`` says and publish the run (``shared/<demo name>``); when it
    exists already (another session built it), nothing is computed. Call it inside ``JOBS.turn()``."""
    from .pipeline import run_decomposition  # the pipeline imports torch models: only when a demo is built
    from .runs import save_run

    path = demo_path(runs_root, demo)
    if (path / MANIFEST).is_file():
        return path
    run = run_decomposition(
        backbone,
        data or config.SAMPLE_DATA,
        "train",
        classes=list(demo.classes) if demo.classes else None,
        images_per_class=demo.images_per_class,
        k=demo.k,
        strategy=demo.strategy,
        progress=progress,
    )
    try:
        save_run(run, path)
    except FileExistsError:  # built meanwhile by another process: theirs is the same run
        pass
    return path


# -- one heavy job at a time -----------------------------------------------------------------------------
class JobQueue:
    """A first-come, first-served line for heavy jobs (decompositions, probes): ``slots`` run at a time,
    the others wait and can say their place. One per process (``JOBS``), shared by all sessions."""

    def __init__(self, slots: int = 1):
        self.slots = slots
        self._cond = threading.Condition()
        self._line: list[object] = []  # waiting tickets, first come first
        self._running: list[object] = []

    def place(self, ticket: object) -> int:
        """1 while the ticket's job runs; otherwise 1 + the jobs ahead of it (running or waiting)."""
        with self._cond:
            if ticket in self._running:
                return 1
            return len(self._running) + self._line.index(ticket) + 1

    def __len__(self) -> int:
        with self._cond:
            return len(self._running) + len(self._line)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] | None = None, poll: float = 0.5) -> Iterator[None]:
        """Wait for a slot (calling ``on_wait(place)`` about every ``poll`` seconds meanwhile), hold it for
        the ``with`` block, then give it to the next in line. Leaving early (an exception in ``on_wait``,
        e.g. the page was left) gives up the place in line."""
        ticket = object()
        with self._cond:
            self._line.append(ticket)
        try:
            while True:
                with self._cond:
                    if len(self._running) < self.slots and self._line[0] is ticket:
                        self._line.pop(0)
                        self._running.append(ticket)
                        break
                    place = len(self._running) + self._line.index(ticket) + 1
                if on_wait is not None:
                    on_wait(place)
                with self._cond:
                    if not (len(self._running) < self.slots and self._line[0] is ticket):
                        self._cond.wait(poll)
            yield
        finally:
            with self._cond:
                if ticket in self._line:
                    self._line.remove(ticket)
                if ticket in self._running:
                    self._running.remove(ticket)
                self._cond.notify_all()


JOBS = JobQueue(1)


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th... 11th, 12th, 13th... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
