"""Run artifacts: a folder with the tensors (safetensors) and a JSON manifest, written atomically.

A run is tied to the exact weights it was computed from: loading it against a model with another
fingerprint is refused, because its prototypes would no longer sum to that model's head.
"""

from __future__ import annotations

import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .backbones import Backbone, load_backbone
from .backbones.probe_models import PREFIX as PROBE_PREFIX
from .files import ManifestError, atomic_dir, read_manifest, recover_folder, recover_swap
from .method import PartPrototypes, PrototypeHead
from .method.discovery import DEFAULT_DISCOVERY
from .method.estimator import check_params
from .method.refine import STRATEGIES, head_error
from .method.spatial import KEY as SPATIAL_KEY
from .method.spatial import SpatialEdit, from_manifest, spatial_problem

#: version 2 records the estimator's parameters once, under ``params``; version 1 also had ``k``, ``strategy``,
#: ``seed``, ``solver`` and ``discovery`` at the top (older runs had them there only): ``upgraded`` reads it
FORMAT, FORMAT_V1 = "protoscope.run/2", "protoscope.run/1"
MANIFEST, TENSORS = "manifest.json", "prototypes.safetensors"
#: the manifest key of the prototypes' names (``Run.labels``), and the longest name allowed
LABELS_KEY, MAX_LABEL_CHARS = "prototype_labels", 80


class RunError(ValueError):
    """A run folder is missing, damaged, or does not belong to the model it is used with."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "numpy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


@dataclass
class Run:
    """A decomposition: per decomposed class, its NMF prototypes, scales and refined prototypes."""

    manifest: dict
    classes: torch.Tensor  # (C,) labels in the model's label space
    nmf_prototypes: torch.Tensor  # (C, k, D)
    alpha: torch.Tensor  # (C, k)
    refined: dict[str, torch.Tensor]  # strategy -> (C, k, D)
    feature_error: torch.Tensor  # (C,)
    presence_scale: torch.Tensor  # (C, k) NMF heatmap level that counts as "part present"
    scale: torch.Tensor | None = None  # (C, k) a saved intervention; None = untouched
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.manifest = upgraded(self.manifest)

    @property
    def k(self) -> int:
        return self.nmf_prototypes.shape[1]

    @property
    def params(self) -> dict:
        """The parameters of the :class:`PartPrototypes` that made the run, as its manifest records them (a
        copy; runs older than a parameter lack it: the estimator's default applied)."""
        return dict(self.manifest["params"])

    @property
    def strategy(self) -> str:
        return self.manifest["params"]["strategy"]

    @property
    def discovery(self) -> str:
        """How the run's prototypes were found (``method.discovery``); runs older than the choice used
        the paper's NMF."""
        return self.manifest["params"].get("discovery", DEFAULT_DISCOVERY)

    @property
    def prototypes(self) -> torch.Tensor:
        """The refined prototypes of the run's strategy, with a saved intervention applied."""
        prototypes = self.refined[self.strategy]
        return prototypes if self.scale is None else prototypes * self.scale.unsqueeze(-1)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.manifest["classes"]]

    @property
    def labels(self) -> dict[str, dict[str, str]]:
        """The names people gave prototypes: ``{"<class label>": {"<i>": "beak"}}``, the class by its label in
        the model's label space (as in ``classes``), the prototype by its 0-based position (shown as P<i+1>).
        Unnamed prototypes are absent. A copy: change labels with ``with_labels``."""
        return {c: dict(names) for c, names in (self.manifest.get(LABELS_KEY) or {}).items()}

    def label_grid(self) -> list[list[str]]:
        """The labels as a (C, k) grid in the run's class order, "" where a prototype has no name."""
        labels = self.labels
        return [[labels.get(str(int(c)), {}).get(str(i), "") for i in range(self.k)] for c in self.classes]

    def with_labels(self, labels: Mapping[object, Mapping[object, str]]) -> Run:
        """A copy of this run whose prototypes carry ``labels`` (replacing the old ones): keys as in ``labels``
        (ints or strings), names stripped, empty names dropped. ValueError for a class the run did not decompose,
        a prototype outside 0..k-1, or a name that is too long or holds control characters. Save it with
        ``save_run`` (over the same folder with ``overwrite=True``: a new version, written atomically)."""
        clean = normalise_labels(labels)
        problem = labels_problem(clean, self.k, [int(c) for c in self.classes])
        if problem:
            raise ValueError(problem)
        manifest = {key: value for key, value in self.manifest.items() if key != LABELS_KEY}
        if clean:
            manifest[LABELS_KEY] = clean
        return replace(self, manifest=manifest)

    @classmethod
    def from_model(cls, manifest: dict, model: PartPrototypes) -> Run:
        """A run of a fitted estimator (``manifest`` says where its features came from)."""
        return cls(
            manifest,
            model.classes_,
            model.prototypes_,
            model.alpha_,
            model.refined_by_strategy_,
            model.feature_error_,
            model.presence_scale_,
        )

    def head_error(self, weight: torch.Tensor) -> torch.Tensor:
        """||v - sum_i alpha_i p_i|| / ||v|| per class: what the NMF prototypes alone miss."""
        return head_error(self.nmf_prototypes, self.alpha, weight[self.classes].float())

    def check_backbone(self, backbone: Backbone) -> None:
        """Refuse a model with other weights, or whose label space the run's classes do not fit."""
        if int(self.classes.max()) >= len(backbone.labels):
            raise RunError(
                f"run {self.path or ''} names class {int(self.classes.max())}, but {backbone.name} has "
                f"{len(backbone.labels)} classes"
            )
        D = backbone.head_weight.shape[1]
        if self.nmf_prototypes.shape[-1] != D:
            raise RunError(
                f"run {self.path or ''}: its prototypes have {self.nmf_prototypes.shape[-1]} features, "
                f"but {backbone.name}'s head takes {D}"
            )
        expected = self.manifest["fingerprint"]
        if backbone.fingerprint != expected or backbone.name != self.manifest["backbone"]:
            raise RunError(
                f"run {self.path or ''} was made with {self.manifest['backbone']} (weights {expected}); "
                f"it cannot be applied to {backbone.name} (weights {backbone.fingerprint})"
            )
        rows = backbone.head_weight.detach().float().cpu()[self.classes]
        gap = float((self.refined[self.strategy].sum(dim=1) - rows).abs().max())
        if gap > SUM_TOLERANCE * max(1.0, float(rows.abs().max())):
            raise RunError(
                f"run {self.path or ''}: its prototypes no longer sum to the model's head rows (gap {gap:.2g}); "
                "the run was altered or damaged: decompose again"
            )

    def head(self, backbone: Backbone) -> PrototypeHead:
        """The model's head rewritten with this run's prototypes (refused for another model)."""
        self.check_backbone(backbone)
        return PrototypeHead.from_parts(
            backbone.head_weight, backbone.head_bias, self.classes, self.prototypes, self.nmf_prototypes, self.presence_scale
        )

    def load_backbone(self, device="cpu") -> Backbone:
        """The model this run was made from, as its manifest names it."""
        backbone = load_backbone(self.manifest["backbone"], self.manifest.get("weights"), device)
        self.check_backbone(backbone)
        return backbone

    @property
    def spatial_edit(self) -> SpatialEdit | None:
        """The saved edit in space (cells left out of the pooling, ``method.spatial``), or None."""
        return from_manifest(self.manifest)

    def with_spatial_edit(self, edit: SpatialEdit | None, note: str) -> Run:
        """A copy of this run whose model leaves out of its pooling the cells of ``edit`` (replacing any
        earlier such edit; None or an empty edit removes it). A change of the computation, not of the head."""
        manifest = {key: value for key, value in self.manifest.items() if key != SPATIAL_KEY}
        if edit:
            problem = spatial_problem(edit.to_manifest(), self.k, self.classes.tolist())
            if problem:
                raise ValueError(problem)
            manifest[SPATIAL_KEY] = edit.to_manifest()
        if edit or self.spatial_edit:  # a run that never had one is left as it is
            manifest.update(spatial_note=note, parent=str(self.path) if self.path else manifest.get("parent"))
        return replace(self, manifest=manifest, path=None)

    def with_scale(self, scale: torch.Tensor, note: str) -> Run:
        """A copy of this run whose head carries an intervention (saved as a run of its own)."""
        manifest = dict(self.manifest, intervention=note, parent=str(self.path) if self.path else None)
        combined = scale.float() if self.scale is None else self.scale * scale.float()
        return replace(self, manifest=manifest, scale=combined, path=None)


def save_run(run: Run, path: str | Path, overwrite: bool = False) -> Path:
    """Write the run folder atomically: a reader sees the old run or the whole new one."""
    path = Path(path)
    tensors = {
        "classes": run.classes,
        "nmf_prototypes": run.nmf_prototypes,
        "alpha": run.alpha,
        "feature_error": run.feature_error,
        "presence_scale": run.presence_scale,
        **{f"refined.{name}": value for name, value in run.refined.items()},
    }
    if run.scale is not None:
        tensors["scale"] = run.scale
    manifest = dict(run.manifest, format=FORMAT, saved=datetime.now(UTC).isoformat(timespec="seconds"))
    with atomic_dir(path, overwrite=overwrite, marker=MANIFEST) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    run.path = path
    run.manifest = manifest
    return path


def read_run_manifest(path: str | Path) -> dict:
    """The manifest of a run folder, an older version read as the current one (RunError when it is missing
    or damaged). Saving the run again writes the current version."""
    try:
        return upgraded(read_manifest(Path(path) / MANIFEST, (FORMAT, FORMAT_V1)))
    except ManifestError as exc:
        raise RunError(f"{path} is not a run folder, or not a usable run folder: {exc}") from exc


#: version 1's top-level keys and the parameter each one records
_V1_KEYS = {"k": "k", "strategy": "strategy", "seed": "random_state", "solver": "solver", "discovery": "discovery"}


def upgraded(manifest):
    """A version 1 manifest as version 2 (a new dict: ``params`` from its top-level keys, which win over its
    own ``params``, the way version 1 was read); anything else unchanged. Version 2 never has those keys at
    the top, so any found there (a hand-made manifest) are read the same way."""
    if not isinstance(manifest, dict) or (manifest.get("format") != FORMAT_V1 and not _V1_KEYS.keys() & manifest.keys()):
        return manifest
    params = dict(manifest["params"]) if isinstance(manifest.get("params"), dict) else {}
    params.update({new: manifest[old] for old, new in _V1_KEYS.items() if old in manifest})
    rest = {key: value for key, value in manifest.items() if key not in _V1_KEYS}
    return {**rest, "format": FORMAT, "params": params}


def load_run(path: str | Path, backbone: Backbone | None = None) -> Run:
    """Read a run folder; with ``backbone`` given, refuse it unless the weights match."""
    path = Path(path)
    recover_swap(path)  # a save interrupted between its two renames: the old run comes back
    manifest = read_run_manifest(path)
    try:
        tensors = load_file(str(path / TENSORS))
    except FileNotFoundError as exc:
        raise RunError(f"{path} is not a run folder (no {TENSORS})") from exc
    except Exception as exc:
        raise RunError(f"{path}: damaged run ({exc})") from exc
    refined = {k.removeprefix("refined."): v for k, v in tensors.items() if k.startswith("refined.")}
    try:
        run = Run(
            manifest,
            tensors["classes"],
            tensors["nmf_prototypes"],
            tensors["alpha"],
            refined,
            tensors["feature_error"],
            tensors["presence_scale"],
            tensors.get("scale"),
            path,
        )
    except KeyError as exc:
        raise RunError(f"{path}: damaged run (no tensor {exc})") from exc
    problem = run_problem(run)
    if problem:
        raise RunError(f"{path}: damaged run ({problem})")
    if backbone is not None:
        run.check_backbone(backbone)
    return run


#: how far the refined prototypes may sum from the head rows (relative to the largest weight): float error only
SUM_TOLERANCE = 1e-4
#: manifest keys every run has, and their types
REQUIRED_KEYS = {"backbone": str, "fingerprint": str, "params": dict, "classes": list, "images": dict}


def run_problem(run: Run) -> str | None:
    """Why a run cannot be used as it is, or None: manifest keys and types, strategies, label ranges,
    tensor shapes and finiteness. A run that passes gives logits the model's own within float error."""
    m = run.manifest
    problem = manifest_problem(m)
    if problem:
        return problem
    unknown, strategy = sorted(set(run.refined) - set(STRATEGIES)), m["params"]["strategy"]
    if unknown or strategy not in run.refined:
        return f"strategy {strategy!r} has no prototypes" if not unknown else f"unknown strategies {unknown}"
    tensors = {
        "classes": run.classes,
        "nmf_prototypes": run.nmf_prototypes,
        "alpha": run.alpha,
        "feature_error": run.feature_error,
        "presence_scale": run.presence_scale,
        **{f"refined.{s}": p for s, p in run.refined.items()},
        **({"scale": run.scale} if run.scale is not None else {}),
    }
    problem = tensors_problem({name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}, m)
    if problem:
        return problem
    C = len(run.classes)
    if C and int(run.classes.min()) < 0:
        return "a class label is negative"
    if len(set(run.classes.tolist())) != C:
        return "a class label appears twice"
    for name, tensor in tensors.items():
        if name != "classes" and not bool(torch.isfinite(tensor).all()):
            return f"{name} holds NaN or infinite values"
    return labels_problem(m.get(LABELS_KEY) or {}, m["params"]["k"], run.classes.tolist())


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


def normalise_labels(labels: Mapping[object, Mapping[object, str]] | None) -> dict[str, dict[str, str]]:
    """Prototype labels with string keys, names stripped and empty names (and classes) dropped."""
    clean: dict[str, dict[str, str]] = {}
    for c, names in (labels or {}).items():
        if not isinstance(names, Mapping):
            raise ValueError(f"the labels of class {c!r} are not a mapping of prototype -> name")
        kept = {str(i): text.strip() for i, text in names.items() if isinstance(text, str) and text.strip()}
        bad = [i for i, text in names.items() if not isinstance(text, str) and text is not None]
        if bad:
            raise ValueError(f"the label of prototype {bad[0]!r} of class {c!r} is not text")
        if kept:
            clean[str(c)] = kept
    return clean


def labels_problem(labels, k: int, classes: Sequence[int] | None = None) -> str | None:
    """Why ``labels`` (a manifest's ``prototype_labels``) cannot be used, or None: a mapping of class labels
    (of ``classes`` when given) to mappings of prototype positions 0..k-1 to short one-line names."""
    if not isinstance(labels, dict):
        return f"{LABELS_KEY} is not an object"
    known = None if classes is None else {int(c) for c in classes}
    for c, names in labels.items():
        if not (isinstance(c, str) and c.isascii() and c.isdecimal()) or (known is not None and int(c) not in known):
            return f"{LABELS_KEY} names class {c!r}, which the run did not decompose"
        if not isinstance(names, dict):
            return f"{LABELS_KEY} of class {c} is not an object"
        for i, text in names.items():
            if not (isinstance(i, str) and i.isascii() and i.isdecimal() and int(i) < k):
                return f"{LABELS_KEY} of class {c} names prototype {i!r}; the run has prototypes 0..{k - 1}"
            if not isinstance(text, str) or not text.strip():
                return f"the label of prototype {i} of class {c} is empty or not text"
            if len(text) > MAX_LABEL_CHARS:
                return f"the label of prototype {i} of class {c} is longer than {MAX_LABEL_CHARS} characters"
            if not text.isprintable():
                return f"the label of prototype {i} of class {c} holds a line break or another control character"
    return None


def manifest_problem(manifest) -> str | None:
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
    if manifest.get(SPATIAL_KEY) is not None:
        listed = [e.get("label") for e in manifest["classes"]]
        problem = spatial_problem(manifest[SPATIAL_KEY], k, listed if all(type(c) is int for c in listed) else None)
        if problem:
            return problem
    if manifest.get(LABELS_KEY) is not None:
        listed = [e["label"] for e in manifest["classes"] if isinstance(e.get("label"), int)]
        return labels_problem(manifest[LABELS_KEY], k, listed if len(listed) == len(manifest["classes"]) else None)
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


# -- names of runs (and of the other folders saved beside them) ----------------------------------
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """``text`` as one file or folder name: each run of characters other than letters, digits, '.', '-'
    and '_' becomes '-' (so no path separators, no '..' alone); ValueError when nothing is left."""
    cleaned = _NOT_IN_NAMES.sub("-", text.strip()).strip("-.")
    if not cleaned:
        raise ValueError(f"{text!r} cannot be a name: use letters, digits, '.', '-' or '_'")
    return cleaned[:100]


def unique_path(root: str | Path, name: str) -> Path:
    """``root/<safe name>``, or ``-2``, ``-3``... appended when taken: a new folder never overwrites another."""
    root, name = Path(root), safe_name(name)
    path, n = root / name, 2
    while path.exists():
        path, n = root / f"{name}-{n}", n + 1
    return path


def short_backbone(name: str) -> str:
    """A backbone's name for run names and captions: a probe by its folder's name, not its full path."""
    if not name.startswith(PROBE_PREFIX):
        return name
    folder = Path(name.removeprefix(PROBE_PREFIX)).name
    return folder if folder.startswith("probe") else f"probe-{folder}"


def auto_run_name(backbone: str, k: int, strategy: str, n_classes: int) -> str:
    """A readable default name, e.g. ``efficientnet_lite0-10cls-k3-optimized``."""
    return safe_name(f"{short_backbone(backbone)}-{n_classes}cls-k{k}-{strategy}")


def run_folder_above(path: str | Path) -> Path | None:
    """The run folder that ``path`` would be written inside, or None: only ``save_run`` writes in a run folder
    (a command's output there would change a run, or a published run, behind its manifest)."""
    for parent in Path(path).expanduser().absolute().parents:
        if (parent / MANIFEST).is_file() and (parent / TENSORS).is_file():
            return parent
    return None
