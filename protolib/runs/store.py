"""A run on disk: ``save_run`` writes the folder atomically (a reader sees the old run or the whole new one),
``load_run`` reads it back, recovering an interrupted save first, and refuses a damaged run (``run_problem``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..backbones import Backbone
from ..files import atomic_dir, recover_swap
from ..method.refine import STRATEGIES
from .checks import manifest_problem, prototype_names_problem, tensors_problem
from .run import Run
from .schema import FORMAT, MANIFEST, PROTOTYPE_NAMES_KEY, TENSORS, RunError, read_run_manifest


def run_tensors(run: Run) -> dict[str, torch.Tensor]:
    """The tensors a run folder keeps (``prototypes.safetensors``), by name."""
    return {
        "classes": run.classes,
        "nmf_prototypes": run.nmf_prototypes,
        "alpha": run.alpha,
        "feature_error": run.feature_error,
        "presence_scale": run.presence_scale,
        **{f"refined.{strategy}": p for strategy, p in run.refined_by_strategy.items()},
        **({"scale": run.scale} if run.scale is not None else {}),
    }


def save_run(run: Run, path: str | Path, overwrite: bool = False) -> Path:
    """Write the run folder atomically: a reader sees the old run or the whole new one."""
    path = Path(path)
    tensors = run_tensors(run)
    manifest = dict(run.manifest, format=FORMAT, saved=datetime.now(UTC).isoformat(timespec="seconds"))
    with atomic_dir(path, overwrite=overwrite, marker=MANIFEST) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    run.path = path
    run.manifest = manifest
    return path


def save_once(path: str | Path, make_run: Callable[[], Run]) -> Path:
    """A run computed at most once and shared (the demos): when ``path`` holds a run nothing is computed;
    otherwise ``make_run()`` is saved there, and if another process saved it meanwhile, theirs stays (the same
    settings make the same run)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    try:
        save_run(make_run(), path)
    except FileExistsError:
        pass
    return path


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


def run_problem(run: Run) -> str | None:
    """Why a run cannot be used as it is, or None: manifest keys and types, strategies, label ranges,
    tensor shapes and finiteness. A run that passes gives logits the model's own within float error."""
    m = run.manifest
    problem = manifest_problem(m)
    if problem:
        return problem
    unknown, strategy = sorted(set(run.refined_by_strategy) - set(STRATEGIES)), m["params"]["strategy"]
    if unknown or strategy not in run.refined_by_strategy:
        return f"strategy {strategy!r} has no prototypes" if not unknown else f"unknown strategies {unknown}"
    tensors = run_tensors(run)
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
    return prototype_names_problem(m.get(PROTOTYPE_NAMES_KEY) or {}, m["params"]["k"], run.classes.tolist())
