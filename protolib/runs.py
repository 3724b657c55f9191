"""Run artifacts: a folder with the tensors (safetensors) and a JSON manifest, written atomically.

A run is tied to the exact weights it was computed from: loading it against a model with another
fingerprint is refused, because its prototypes would no longer sum to that model's head.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_dir
from .backbones import Backbone, load_backbone
from .head import PrototypeHead

FORMAT = "protoscope.run/1"
MANIFEST, TENSORS = "manifest.json", "prototypes.safetensors"


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

    @property
    def k(self) -> int:
        return self.nmf_prototypes.shape[1]

    @property
    def strategy(self) -> str:
        return self.manifest["strategy"]

    @property
    def prototypes(self) -> torch.Tensor:
        """The refined prototypes of the run's strategy, with a saved intervention applied."""
        prototypes = self.refined[self.strategy]
        return prototypes if self.scale is None else prototypes * self.scale.unsqueeze(-1)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.manifest["classes"]]

    def head_error(self, weight: torch.Tensor) -> torch.Tensor:
        """||v - sum_i alpha_i p_i|| / ||v|| per class: what the NMF prototypes alone miss."""
        v = weight[self.classes].float()
        approx = (self.alpha.unsqueeze(-1) * self.nmf_prototypes).sum(dim=1)
        return (v - approx).norm(dim=1) / v.norm(dim=1).clamp_min(1e-12)

    def check_backbone(self, backbone: Backbone) -> None:
        expected = self.manifest["fingerprint"]
        if backbone.fingerprint != expected or backbone.name != self.manifest["backbone"]:
            raise RunError(
                f"run {self.path or ''} was made with {self.manifest['backbone']} (weights {expected}); "
                f"it cannot be applied to {backbone.name} (weights {backbone.fingerprint})"
            )

    def head(self, backbone: Backbone) -> PrototypeHead:
        """The model's head rewritten with this run's prototypes (refused for another model)."""
        self.check_backbone(backbone)
        parts = self.nmf_prototypes / self.presence_scale.unsqueeze(-1)
        return PrototypeHead(backbone.head_weight.cpu(), backbone.head_bias.cpu(), self.classes, self.prototypes, parts)

    def load_backbone(self, device="cpu") -> Backbone:
        """The model this run was made from, as its manifest names it."""
        backbone = load_backbone(self.manifest["backbone"], self.manifest.get("weights"), device)
        self.check_backbone(backbone)
        return backbone

    def with_scale(self, scale: torch.Tensor, note: str) -> Run:
        """A copy of this run whose head carries an intervention (saved as a run of its own)."""
        manifest = dict(self.manifest, intervention=note, parent=str(self.path) if self.path else None)
        combined = scale.float() if self.scale is None else self.scale * scale.float()
        return Run(
            manifest, self.classes, self.nmf_prototypes, self.alpha, self.refined, self.feature_error,
            self.presence_scale, combined,
        )


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
    with atomic_dir(path, overwrite=overwrite) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    run.path = path
    run.manifest = manifest
    return path


def load_run(path: str | Path, backbone: Backbone | None = None) -> Run:
    """Read a run folder; with ``backbone`` given, refuse it unless the weights match."""
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        tensors = load_file(str(path / TENSORS))
    except FileNotFoundError as exc:
        raise RunError(f"{path} is not a run folder (no {exc.filename and Path(exc.filename).name})") from exc
    except Exception as exc:
        raise RunError(f"{path}: damaged run ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise RunError(f"{path}: unknown run format {manifest.get('format')!r}")
    refined = {k.removeprefix("refined."): v for k, v in tensors.items() if k.startswith("refined.")}
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
    if backbone is not None:
        run.check_backbone(backbone)
    return run


def list_runs(root: str | Path, manifest: str = MANIFEST) -> list[Path]:
    """Run folders directly under ``root`` (folders holding ``manifest``), newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / manifest).is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: (p / manifest).stat().st_mtime, reverse=True)
