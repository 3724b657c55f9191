"""Why a run cannot be used, or None: its manifest (keys, parameters, prototype names, the edit in space)
and its tensors' dtypes and shapes, checked without a ``Run`` so that a listing can check a run's header alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors import safe_open

from ..method import PartPrototypes
from ..method.estimator import check_params
from ..method.spatial import KEY as SPATIAL_KEY
from ..method.spatial import spatial_problem
from .schema import MAX_PROTOTYPE_NAME_CHARS, PRESENCE_DAMPING_KEY, PROTOTYPE_NAMES_KEY, REQUIRED_KEYS, TENSORS, upgraded

#: how far the refined prototypes may sum from the head rows (relative to the largest weight): float error only
SUM_TOLERANCE = 1e-4
_INTEGER = {torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8}
_FLOAT = {torch.float32, torch.float64, torch.float16, torch.bfloat16}


def tensors_problem(tensors: Mapping[str, tuple[torch.dtype | None, tuple[int, ...]]], manifest: dict) -> str | None:
    """Why tensors of these dtypes and shapes cannot be a run with ``manifest``, or None: integer class labels
    (C,), float prototypes (C, k, D), float alpha, presence scale and intervention scale (C, k), feature error
    (C,), C the manifest's number of classes and k its k. Needs no tensor data (a listing reads headers only)."""
    C, k = len(manifest["classes"]), upgraded(manifest)["params"]["k"]
    if "classes" not in tensors:
        return "no tensor 'classes'"
    dtype, shape = tensors["classes"]
    if dtype not in _INTEGER or len(shape) != 1:
        return f"classes is a {dtype} tensor of shape {shape}, not integer labels (C,)"
    if shape[0] != C:
        return f"{C} classes in the manifest for {shape[0]} in the tensors"
    D = tensors.get("nmf_prototypes", (None, ()))[1][-1:] or (0,)
    expected = {
        "nmf_prototypes": (C, k, *D),
        "alpha": (C, k),
        "presence_scale": (C, k),
        "feature_error": (C,),
        "scale": (C, k),
        **{name: (C, k, *D) for name in tensors if name.startswith("refined.")},
    }
    for name, want in expected.items():
        if name not in tensors:
            if name == "scale":
                continue
            return f"no tensor {name!r}"
        dtype, shape = tensors[name]
        if dtype not in _FLOAT:
            return f"{name} is a {dtype} tensor, not a floating-point one"
        if shape != want or (len(want) == 3 and want[2] < 1):
            return f"{name} has shape {shape}, not {want}" if len(want) < 3 else f"{name} has shape {shape}, not ({C}, {k}, D)"
    return None


def tensors_header_problem(path: Path, manifest: dict) -> str | None:
    """``tensors_problem`` from the tensor file's header alone (cheap enough for every listing)."""
    try:
        with safe_open(str(path / TENSORS), framework="pt") as f:
            heads = {name: f.get_slice(name) for name in f.keys()}
            found = {name: (_DTYPES.get(h.get_dtype()), tuple(h.get_shape())) for name, h in heads.items()}
    except FileNotFoundError:
        return f"no {TENSORS}"
    except Exception as exc:  # safetensors raises its own error kinds for a damaged file
        return f"unreadable {TENSORS} ({exc})"
    return tensors_problem(found, manifest)


_DTYPES = {
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "U8": torch.uint8,
    "I8": torch.int8,
    "F32": torch.float32,
    "F64": torch.float64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "BOOL": torch.bool,
}


def normalise_prototype_names(prototype_names: Mapping[object, Mapping[object, str]] | None) -> dict[str, dict[str, str]]:
    """Prototype names with string keys, names stripped and empty names (and classes) dropped."""
    clean: dict[str, dict[str, str]] = {}
    for c, names in (prototype_names or {}).items():
        if not isinstance(names, Mapping):
            raise ValueError(f"the labels of class {c!r} are not a mapping of prototype -> name")
        kept = {str(i): text.strip() for i, text in names.items() if isinstance(text, str) and text.strip()}
        bad = [i for i, text in names.items() if not isinstance(text, str) and text is not None]
        if bad:
            raise ValueError(f"the name of prototype {bad[0]!r} of class {c!r} is not text")
        if kept:
            clean[str(c)] = kept
    return clean


def prototype_names_problem(prototype_names: object, k: int, classes: Sequence[int] | None = None) -> str | None:
    """Why ``prototype_names`` (a manifest's ``prototype_names``) cannot be used, or None: a mapping of class labels
    (of ``classes`` when given) to mappings of prototype positions 0..k-1 to short one-line names."""
    if not isinstance(prototype_names, dict):
        return f"{PROTOTYPE_NAMES_KEY} is not an object"
    known = None if classes is None else {int(c) for c in classes}
    for c, names in prototype_names.items():
        if not (isinstance(c, str) and c.isascii() and c.isdecimal()) or (known is not None and int(c) not in known):
            return f"{PROTOTYPE_NAMES_KEY} names class {c!r}, which the run did not decompose"
        if not isinstance(names, dict):
            return f"{PROTOTYPE_NAMES_KEY} of class {c} is not an object"
        for i, text in names.items():
            if not (isinstance(i, str) and i.isascii() and i.isdecimal() and int(i) < k):
                return f"{PROTOTYPE_NAMES_KEY} of class {c} names prototype {i!r}; the run has prototypes 0..{k - 1}"
            if not isinstance(text, str) or not text.strip():
                return f"the name of prototype {i} of class {c} is empty or not text"
            if len(text) > MAX_PROTOTYPE_NAME_CHARS:
                return f"the name of prototype {i} of class {c} is longer than {MAX_PROTOTYPE_NAME_CHARS} characters"
            if not text.isprintable():
                return f"the name of prototype {i} of class {c} holds a line break or another control character"
    return None


def manifest_problem(manifest: object) -> str | None:
    """Why a run's manifest cannot be listed or opened as it is, or None: the checks of ``run_problem``
    that need no tensors (keys and types, parameters an estimator accepts, one readable entry per class).
    A listing marks such a run damaged instead of letting a page trip over it. Reads either version."""
    manifest = upgraded(manifest)
    if not isinstance(manifest, dict):
        return f"the manifest is a JSON {type(manifest).__name__}, not an object"
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(manifest.get(key), kind):
            return f"manifest key {key!r} is missing or not a {kind.__name__}"
    problem = params_problem(manifest["params"])
    if problem:
        return problem
    k = manifest["params"]["k"]
    for entry in manifest["classes"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("folder"), str)):
            return "a class entry of the manifest has no name or folder"
    damping = manifest.get(PRESENCE_DAMPING_KEY, 0.0)
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not 0 <= damping <= 1:
        return f"{PRESENCE_DAMPING_KEY} {damping!r} is not a number in [0, 1]"
    if manifest.get(SPATIAL_KEY) is not None:
        listed = [e.get("label") for e in manifest["classes"]]
        problem = spatial_problem(manifest[SPATIAL_KEY], k, listed if all(type(c) is int for c in listed) else None)
        if problem:
            return problem
    if manifest.get(PROTOTYPE_NAMES_KEY) is not None:
        listed = [e["label"] for e in manifest["classes"] if isinstance(e.get("label"), int)]
        return prototype_names_problem(
            manifest[PROTOTYPE_NAMES_KEY], k, listed if len(listed) == len(manifest["classes"]) else None
        )
    return None


def params_problem(params: dict) -> str | None:
    """Why a manifest's ``params`` are not those of a :class:`PartPrototypes`, or None: ``k`` and ``strategy``
    recorded, every parameter known and accepted (a missing one reads as the estimator's default)."""
    missing = [key for key in ("k", "strategy") if key not in params]
    unknown = sorted(set(params) - set(PartPrototypes().get_params(deep=False)))
    if missing or unknown:
        return f"the manifest's params lack {missing}" if missing else f"the manifest's params hold unknown {unknown}"
    try:
        check_params({**PartPrototypes().get_params(deep=False), **params})
    except ValueError as exc:
        return str(exc)
    return None
