"""The run folder's format: its file names, the manifest's versions and keys, and the reader that reads an
older version as the current one (``upgraded``: every reader of a manifest goes through it)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import overload

from ..files import ManifestError, read_manifest

#: version 3 calls the prototypes' names ``prototype_names`` (version 2: ``_V2_NAMES_KEY``); version 2 records
#: the estimator's parameters once, under ``params``; version 1 also had ``k``, ``strategy``, ``seed``, ``solver``
#: and ``discovery`` at the top (older runs had them there only): ``upgraded`` reads both
FORMAT, FORMAT_V2, FORMAT_V1 = "protoscope.run/3", "protoscope.run/2", "protoscope.run/1"
MANIFEST, TENSORS = "manifest.json", "prototypes.safetensors"
#: the manifest key of the prototypes' names (``Run.prototype_names``), and the longest name allowed
PROTOTYPE_NAMES_KEY, MAX_PROTOTYPE_NAME_CHARS = "prototype_names", 80
#: the manifest key of how the run's part maps read a cell (``Run.presence_damping``; absent in older runs: 0)
PRESENCE_DAMPING_KEY = "presence_damping"
#: manifest keys every run has, and their types
REQUIRED_KEYS = {"backbone": str, "fingerprint": str, "params": dict, "classes": list, "images": dict}


class RunError(ValueError):
    """A run folder is missing, damaged, or does not belong to the model it is used with."""


def library_versions() -> dict[str, str]:
    """The versions of Python and of the libraries behind a run's numbers (its manifest records them)."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


def read_run_manifest(path: str | Path) -> dict:
    """The manifest of a run folder, an older version read as the current one (RunError when it is missing
    or damaged). Saving the run again writes the current version."""
    try:
        return upgraded(read_manifest(Path(path) / MANIFEST, (FORMAT, FORMAT_V2, FORMAT_V1)))
    except ManifestError as exc:
        raise RunError(f"{path} is not a run folder, or not a usable run folder: {exc}") from exc


#: version 1's top-level keys and the parameter each one records
_V1_KEYS = {"k": "k", "strategy": "strategy", "seed": "random_state", "solver": "solver", "discovery": "discovery"}


@overload
def upgraded(manifest: dict) -> dict: ...
@overload
def upgraded(manifest: object) -> object: ...
def upgraded(manifest: object) -> object:
    """An older manifest as the current version (a new dict); anything else unchanged."""
    return _v2_as_v3(_v1_as_v2(manifest))


def _v1_as_v2(manifest: object) -> object:
    """A version 1 manifest as version 2 (a new dict: ``params`` from its top-level keys, which win over its
    own ``params``, the way version 1 was read); anything else unchanged. Later versions never have those keys
    at the top, so any found there (a hand-made manifest) are read the same way."""
    if not isinstance(manifest, dict) or (manifest.get("format") != FORMAT_V1 and not _V1_KEYS.keys() & manifest.keys()):
        return manifest
    params = dict(manifest["params"]) if isinstance(manifest.get("params"), dict) else {}
    params.update({new: manifest[old] for old, new in _V1_KEYS.items() if old in manifest})
    rest = {key: value for key, value in manifest.items() if key not in _V1_KEYS}
    return {**rest, "format": FORMAT_V2, "params": params}


#: version 2's key of the prototypes' names
_V2_NAMES_KEY = "prototype_labels"


def _v2_as_v3(manifest: object) -> object:
    """A version 2 manifest (or a version 1 one read as 2) as version 3: the names under its ``_V2_NAMES_KEY``
    move to ``prototype_names``, checked on load like any names; anything else unchanged."""
    if not isinstance(manifest, dict) or (manifest.get("format") != FORMAT_V2 and _V2_NAMES_KEY not in manifest):
        return manifest
    rest = {key: value for key, value in manifest.items() if key != _V2_NAMES_KEY}
    if _V2_NAMES_KEY in manifest:
        rest.setdefault(PROTOTYPE_NAMES_KEY, manifest[_V2_NAMES_KEY])
    return {**rest, "format": FORMAT}
