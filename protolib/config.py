"""Where things live: the package's own resources, the per-user folders for runs, caches and uploads,
which data folders may be opened, and the limits of a shared server.

The only module that knows a path. Everything else asks here, so the library works the same from a
clone, from ``pip install .`` and from any working directory. Each folder and limit can be overridden by
an environment variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"
#: 10 ImageNet classes of real photos (train: 100 per class, val: 50 per class), shipped with the package.
SAMPLE_DATA = RESOURCES / "imagenette"
#: ImageNet-1k's wnids and readable names, in label order.
IMAGENET_CLASSES = RESOURCES / "imagenet_classes.csv"

RUNS_ENV, CACHE_ENV, DATA_ENV = "PROTOLIB_RUNS", "PROTOLIB_CACHE", "PROTOLIB_DATA"
UPLOADS_ENV, DATA_ROOTS_ENV, DEMOS_ENV = "PROTOLIB_UPLOADS", "PROTOLIB_DATA_ROOTS", "PROTOLIB_DEMOS"
#: limits of a shared server: env var -> default (megabytes, megabytes, hours)
SESSION_QUOTA_ENV, TOTAL_QUOTA_ENV, MAX_AGE_ENV = "PROTOLIB_UPLOAD_QUOTA_MB", "PROTOLIB_UPLOADS_TOTAL_MB", "PROTOLIB_MAX_AGE_HOURS"
DEFAULT_SESSION_QUOTA_MB, DEFAULT_TOTAL_QUOTA_MB, DEFAULT_MAX_AGE_HOURS = 500, 5000, 24


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _user_dir(environ: Mapping[str, str], xdg: str, fallback: str) -> Path:
    base = environ.get(xdg)
    return (Path(base).expanduser() if base else Path.home() / fallback) / "protoscope"


def runs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PROTOLIB_RUNS``, else ``$XDG_DATA_HOME/protoscope/runs`` (``~/.local/share/protoscope/runs``)."""
    environ = _environ(environ)
    if environ.get(RUNS_ENV):
        return Path(environ[RUNS_ENV]).expanduser()
    return _user_dir(environ, "XDG_DATA_HOME", ".local/share") / "runs"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PROTOLIB_CACHE``, else ``$XDG_CACHE_HOME/protoscope/features`` (``~/.cache/protoscope/features``)."""
    environ = _environ(environ)
    if environ.get(CACHE_ENV):
        return Path(environ[CACHE_ENV]).expanduser()
    return _user_dir(environ, "XDG_CACHE_HOME", ".cache") / "features"


def data_dir_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$PROTOLIB_DATA`` if it is set."""
    value = _environ(environ).get(DATA_ENV)
    return Path(value).expanduser() if value else None


def uploads_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where sessions keep their uploads, one random folder per session: ``$PROTOLIB_UPLOADS``, else
    ``$XDG_DATA_HOME/protoscope/uploads`` (``~/.local/share/protoscope/uploads``), never a fixed name in /tmp."""
    environ = _environ(environ)
    if environ.get(UPLOADS_ENV):
        return Path(environ[UPLOADS_ENV]).expanduser()
    return _user_dir(environ, "XDG_DATA_HOME", ".local/share") / "uploads"


def demos_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where generated demo data and models are built, once for everybody: ``$PROTOLIB_DEMOS``, else
    ``$XDG_DATA_HOME/protoscope/demos`` (``~/.local/share/protoscope/demos``). Its data may be opened."""
    environ = _environ(environ)
    if environ.get(DEMOS_ENV):
        return Path(environ[DEMOS_ENV]).expanduser()
    return _user_dir(environ, "XDG_DATA_HOME", ".local/share") / "demos"


# -- which data folders may be opened ------------------------------------------------------------
class DataFolderRefused(ValueError):
    """A data folder outside the allowed roots; the message says which folders may be opened."""


def allowed_data_roots(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The folders under which any data folder may be opened: the sample photos, the generated demos,
    ``$PROTOLIB_DATA`` and each folder of ``$PROTOLIB_DATA_ROOTS`` (separated by ``os.pathsep``). A session
    adds its own upload folders (``check_data_folder``'s ``extra_roots``); the uploads folder as a whole is
    never one."""
    environ = _environ(environ)
    roots = [SAMPLE_DATA, demos_dir(environ)]
    if data_dir_from_env(environ):
        roots.append(data_dir_from_env(environ))
    roots += [Path(p).expanduser() for p in environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return roots


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_data_folder(
    path: str | Path, extra_roots=(), environ: Mapping[str, str] | None = None
) -> Path:
    """``path`` resolved (symbolic links and ``..`` followed), when it lies under an allowed root or one of
    ``extra_roots`` (a session's own upload folders); otherwise ``DataFolderRefused``. A folder of the
    uploads, runs or cache folders is refused unless it is under ``extra_roots``, even when an allowed
    root contains them: one session never opens another's uploads. Existence is not checked (the
    refusal says the same for a folder that exists and one that does not)."""
    text = str(path).strip()
    if not text:
        raise DataFolderRefused("no data folder is set")
    if "\x00" in text:
        raise DataFolderRefused("a folder name cannot contain a NUL character")
    resolved = Path(text).expanduser().resolve()
    if any(_inside(resolved, Path(r).expanduser().resolve()) for r in extra_roots):
        return resolved
    private = [uploads_dir(environ), runs_dir(environ), cache_dir(environ)]
    roots = allowed_data_roots(environ)
    servers = roots[2:]  # after the sample photos and the demos
    if not any(_inside(resolved, p.resolve()) for p in private) and any(_inside(resolved, r.resolve()) for r in roots):
        return resolved
    raise DataFolderRefused(
        f"“{text}” cannot be opened here: only the sample photos, the generated demos, the server's data folders "
        f"({os.pathsep.join(str(r) for r in servers) or 'none configured'}) and this session's own uploads can be. "
        f"Upload a .zip of your images on Decompose, or ask whoever runs the server to add the folder to ${DATA_ROOTS_ENV}."
    )


# -- the limits of a shared server -----------------------------------------------------------------
@dataclass(frozen=True)
class SharingLimits:
    """Upload quotas (bytes) and how long a session's uploads and private runs are kept unused (seconds)."""

    session_quota: int
    total_quota: int
    max_age: float


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        value = float(environ.get(name) or default)
    except ValueError:
        return float(default)
    return value if value >= 0 else float(default)


def sharing_limits(environ: Mapping[str, str] | None = None) -> SharingLimits:
    """``$PROTOLIB_UPLOAD_QUOTA_MB`` per session (500), ``$PROTOLIB_UPLOADS_TOTAL_MB`` for all sessions together
    (5000), ``$PROTOLIB_MAX_AGE_HOURS`` before an unused session's uploads and private runs are removed (24)."""
    environ = _environ(environ)
    mb = 1024**2
    return SharingLimits(
        int(_number(environ, SESSION_QUOTA_ENV, DEFAULT_SESSION_QUOTA_MB) * mb),
        int(_number(environ, TOTAL_QUOTA_ENV, DEFAULT_TOTAL_QUOTA_MB) * mb),
        _number(environ, MAX_AGE_ENV, DEFAULT_MAX_AGE_HOURS) * 3600,
    )


# -- pretrained weights and the feature cache's size -------------------------------------------------
WEIGHTS_MIRROR_ENV, CACHE_LIMIT_ENV = "PROTOLIB_WEIGHTS_MIRROR", "PROTOLIB_CACHE_LIMIT_MB"
#: ~20,000 photos at 7x7x1280 in float16 (1000 ImageNet classes x 4 photos take about 500 MB)
DEFAULT_CACHE_LIMIT_MB = 10_000


def weights_mirror(environ: Mapping[str, str] | None = None) -> str | None:
    """``$PROTOLIB_WEIGHTS_MIRROR``: a base URL that replaces the public hosts of pretrained weights (the file's
    name is appended); None when unset."""
    value = _environ(environ).get(WEIGHTS_MIRROR_ENV, "").strip()
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"${WEIGHTS_MIRROR_ENV} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/") or None


def cache_limit_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``$PROTOLIB_CACHE_LIMIT_MB`` (default 10000): the feature cache's size, beyond which the least recently
    used entries are removed."""
    text = _environ(environ).get(CACHE_LIMIT_ENV, "").strip()
    try:
        value = float(text) if text else float(DEFAULT_CACHE_LIMIT_MB)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value != float("inf")):  # NaN fails the first test
        raise ValueError(f"${CACHE_LIMIT_ENV} must be a number of megabytes above 0, not {text!r}")
    return int(value * 1024**2)
