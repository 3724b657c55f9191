"""Where things live: the package's own resources, the per-user folders for runs, caches and uploads,
which data folders may be opened, and the limits of a shared server.

The only module that knows a path. Everything else asks here, so the library works the same from a
clone, from ``pip install .`` and from any working directory. Each folder and limit can be overridden by
an environment variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
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
    return (expand(base, f"${xdg}") if base else Path.home() / fallback) / "protoscope"


class ConfigError(ValueError):
    """A setting (an environment variable, or a folder option) that cannot be used; the message names it."""


def expand(value: str | Path, name: str) -> Path:
    """``value`` with ``~`` expanded; ConfigError naming the setting for ``~nosuchuser`` or a NUL character."""
    text = str(value)
    if "\x00" in text:
        raise ConfigError(f"{name} cannot contain a NUL character")
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # "Could not determine home directory", an unknown ~user
        raise ConfigError(f"{name} = {text!r}: {exc}") from None


def runs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PROTOLIB_RUNS``, else ``$XDG_DATA_HOME/protoscope/runs`` (``~/.local/share/protoscope/runs``)."""
    environ = _environ(environ)
    if environ.get(RUNS_ENV):
        return expand(environ[RUNS_ENV], f"${RUNS_ENV}")
    return _user_dir(environ, "XDG_DATA_HOME", ".local/share") / "runs"


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PROTOLIB_CACHE``, else ``$XDG_CACHE_HOME/protoscope/features`` (``~/.cache/protoscope/features``)."""
    environ = _environ(environ)
    if environ.get(CACHE_ENV):
        return expand(environ[CACHE_ENV], f"${CACHE_ENV}")
    return _user_dir(environ, "XDG_CACHE_HOME", ".cache") / "features"


def data_dir_from_env(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$PROTOLIB_DATA`` if it is set."""
    value = _environ(environ).get(DATA_ENV)
    return expand(value, f"${DATA_ENV}") if value else None


def uploads_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where sessions keep their uploads, one random folder per session: ``$PROTOLIB_UPLOADS``, else
    ``$XDG_DATA_HOME/protoscope/uploads`` (``~/.local/share/protoscope/uploads``), never a fixed name in /tmp."""
    environ = _environ(environ)
    if environ.get(UPLOADS_ENV):
        return expand(environ[UPLOADS_ENV], f"${UPLOADS_ENV}")
    return _user_dir(environ, "XDG_DATA_HOME", ".local/share") / "uploads"


def demos_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where generated demo data and models are built, once for everybody: ``$PROTOLIB_DEMOS``, else
    ``$XDG_DATA_HOME/protoscope/demos`` (``~/.local/share/protoscope/demos``). Its data may be opened."""
    environ = _environ(environ)
    if environ.get(DEMOS_ENV):
        return expand(environ[DEMOS_ENV], f"${DEMOS_ENV}")
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
    env_data = data_dir_from_env(environ)
    if env_data:
        roots.append(env_data)
    roots += [expand(p, f"${DATA_ROOTS_ENV}") for p in environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return roots


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_data_folder(path: str | Path, extra_roots: Iterable[str | Path] = (), environ: Mapping[str, str] | None = None) -> Path:
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
    try:
        resolved = expand(text, "the data folder").resolve()
    except ConfigError as exc:
        raise DataFolderRefused(str(exc)) from None
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


#: the largest value each limit takes (a typo such as ``1e400`` or ``inf`` is refused, not obeyed)
MAX_QUOTA_MB, MAX_AGE_HOURS_LIMIT = 10**8, 10**6


def _number(environ: Mapping[str, str], name: str, default: float, top: float, zero_allowed: bool) -> float:
    """The setting ``name`` as a finite number in (0, top] (or 0 when ``zero_allowed``); ConfigError naming it."""
    text = (environ.get(name) or "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"${name} = {text!r} is not a number") from None
    low = "0 or more" if zero_allowed else "above 0"
    if not math.isfinite(value) or value > top or value < 0 or (value == 0 and not zero_allowed):
        raise ConfigError(f"${name} = {text!r}: give a number {low} and at most {top:g}")
    return value


def sharing_limits(environ: Mapping[str, str] | None = None) -> SharingLimits:
    """``$PROTOLIB_UPLOAD_QUOTA_MB`` per session (500), ``$PROTOLIB_UPLOADS_TOTAL_MB`` for all sessions together
    (5000), ``$PROTOLIB_MAX_AGE_HOURS`` before an unused session's uploads and private runs are removed (24;
    0: never). ConfigError, naming the variable, for anything but a finite number in range."""
    environ = _environ(environ)
    mb = 1024**2
    hours = _number(environ, MAX_AGE_ENV, DEFAULT_MAX_AGE_HOURS, MAX_AGE_HOURS_LIMIT, zero_allowed=True)
    return SharingLimits(
        int(_number(environ, SESSION_QUOTA_ENV, DEFAULT_SESSION_QUOTA_MB, MAX_QUOTA_MB, zero_allowed=False) * mb),
        int(_number(environ, TOTAL_QUOTA_ENV, DEFAULT_TOTAL_QUOTA_MB, MAX_QUOTA_MB, zero_allowed=False) * mb),
        math.inf if hours == 0 else hours * 3600,  # 0: never removed, as people read it
    )


# -- every setting, checked once ---------------------------------------------------------------------
def check_folder_setting(path: str | Path, name: str) -> Path:
    """``path`` expanded, when it is a folder or can become one (it, or its nearest existing parent, is a
    writable folder); ConfigError naming ``name`` otherwise: checked before any work is done."""
    path = expand(path, name)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} = {str(path)!r} is not a folder")
    parent = next((p for p in [path, *path.parents] if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{name} = {str(path)!r} cannot be written (no writable folder at or above it)")
    return path


def check_settings(environ: Mapping[str, str] | None = None) -> None:
    """Every setting of the environment read and checked: ConfigError with the first bad one. The app calls
    it at start, so a bad setting stops it with one message instead of failing on every page."""
    environ = _environ(environ)
    sharing_limits(environ)
    user_header(environ)
    weights_mirror(environ)
    cache_limit_bytes(environ)
    for name, folder in ((RUNS_ENV, runs_dir), (CACHE_ENV, cache_dir), (UPLOADS_ENV, uploads_dir), (DEMOS_ENV, demos_dir)):
        check_folder_setting(folder(environ), f"${name}")
    allowed_data_roots(environ)


# -- who is who behind a team's proxy ---------------------------------------------------------------
USER_HEADER_ENV = "PROTOLIB_USER_HEADER"


def user_header(environ: Mapping[str, str] | None = None) -> str | None:
    """The request header that names the signed-in person, set by the team's authenticating proxy
    (``$PROTOLIB_USER_HEADER``, e.g. ``X-Forwarded-User``); None, the default, trusts no header. A value that
    is not a header name (letters, digits, ``-``, ``_``) is refused: a typo must not silently trust nobody."""
    name = _environ(environ).get(USER_HEADER_ENV, "").strip()
    if name and not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
        raise ConfigError(f"${USER_HEADER_ENV} = {name!r} is not a header name (letters, digits, '-' and '_' only)")
    return name or None


# -- pretrained weights and the feature cache's size -------------------------------------------------
WEIGHTS_MIRROR_ENV, CACHE_LIMIT_ENV = "PROTOLIB_WEIGHTS_MIRROR", "PROTOLIB_CACHE_LIMIT_MB"
#: ~20,000 photos at 7x7x1280 in float16 (1000 ImageNet classes x 4 photos take about 500 MB)
DEFAULT_CACHE_LIMIT_MB = 10_000


def weights_mirror(environ: Mapping[str, str] | None = None) -> str | None:
    """``$PROTOLIB_WEIGHTS_MIRROR``: a base URL that replaces the public hosts of pretrained weights (the file's
    name is appended); None when unset."""
    value = _environ(environ).get(WEIGHTS_MIRROR_ENV, "").strip()
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"${WEIGHTS_MIRROR_ENV} must be an http:// or https:// URL, not {value!r}")
    return value.rstrip("/") or None


def cache_limit_bytes(environ: Mapping[str, str] | None = None) -> int:
    """``$PROTOLIB_CACHE_LIMIT_MB`` (default 10000): the feature cache's size, beyond which the least recently
    used entries are removed."""
    return int(_number(_environ(environ), CACHE_LIMIT_ENV, DEFAULT_CACHE_LIMIT_MB, 1e8, zero_allowed=False) * 1024**2)
