"""A run in memory (``Run``): a decomposition's tensors and manifest, the head it rewrites, and the copies
that carry prototype names, an intervention or an edit in space.

A run is tied to the exact weights it was computed from: applying it to a model with another
fingerprint is refused, because its prototypes would no longer sum to that model's head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..backbones import Backbone, load_backbone
from ..method import PartPrototypes, PrototypeHead
from ..method.discovery import DEFAULT_DISCOVERY
from ..method.refine import head_error
from ..method.spatial import KEY as SPATIAL_KEY
from ..method.spatial import SpatialEdit, from_manifest, spatial_problem
from .checks import SUM_TOLERANCE, normalise_prototype_names, prototype_names_problem
from .schema import PRESENCE_DAMPING_KEY, PROTOTYPE_NAMES_KEY, RunError, upgraded


@dataclass
class Run:
    """A decomposition: per decomposed class, its NMF prototypes, scales and refined prototypes."""

    manifest: dict
    classes: torch.Tensor  # (C,) labels in the model's label space
    nmf_prototypes: torch.Tensor  # (C, k, D)
    alpha: torch.Tensor  # (C, k)
    refined_by_strategy: dict[str, torch.Tensor]  # strategy -> (C, k, D)
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
    def presence_damping(self) -> float:
        """How the run's part maps read a cell (``method.head.read_cells``), as it was made; runs older than
        the choice read them at 0, the paper's maps."""
        return float(self.manifest.get(PRESENCE_DAMPING_KEY, 0.0))

    @property
    def refined_prototypes(self) -> torch.Tensor:
        """The refined prototypes of the run's strategy, with a saved intervention applied."""
        refined_prototypes = self.refined_by_strategy[self.strategy]
        return refined_prototypes if self.scale is None else refined_prototypes * self.scale.unsqueeze(-1)

    @property
    def class_names(self) -> list[str]:
        return [c["name"] for c in self.manifest["classes"]]

    @property
    def prototype_names(self) -> dict[str, dict[str, str]]:
        """The names people gave prototypes: ``{"<class label>": {"<i>": "beak"}}``, the class by its label in
        the model's label space (as in ``classes``), the prototype by its 0-based position (shown as P<i+1>).
        Unnamed prototypes are absent. A copy: change them with ``with_prototype_names``."""
        return {c: dict(names) for c, names in (self.manifest.get(PROTOTYPE_NAMES_KEY) or {}).items()}

    def prototype_name_grid(self) -> list[list[str]]:
        """The labels as a (C, k) grid in the run's class order, "" where a prototype has no name."""
        labels = self.prototype_names
        return [[labels.get(str(int(c)), {}).get(str(i), "") for i in range(self.k)] for c in self.classes]

    def with_prototype_names(self, prototype_names: Mapping[object, Mapping[object, str]]) -> Run:
        """A copy of this run whose prototypes carry ``prototype_names`` (replacing the old ones): keys as in ``prototype_names``
        (ints or strings), names stripped, empty names dropped. ValueError for a class the run did not decompose,
        a prototype outside 0..k-1, or a name that is too long or holds control characters. Save it with
        ``save_run`` (over the same folder with ``overwrite=True``: a new version, written atomically)."""
        clean = normalise_prototype_names(prototype_names)
        problem = prototype_names_problem(clean, self.k, [int(c) for c in self.classes])
        if problem:
            raise ValueError(problem)
        manifest = {key: value for key, value in self.manifest.items() if key != PROTOTYPE_NAMES_KEY}
        if clean:
            manifest[PROTOTYPE_NAMES_KEY] = clean
        return replace(self, manifest=manifest)

    @classmethod
    def from_model(cls, manifest: dict, model: PartPrototypes) -> Run:
        """A run of a fitted estimator (``manifest`` says where its features came from)."""
        return cls(
            {**manifest, PRESENCE_DAMPING_KEY: model.presence_damping_},
            model.classes_,
            model.nmf_prototypes_,
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
        if int(self.classes.max()) >= len(backbone.class_names):
            raise RunError(
                f"run {self.path or ''} names class {int(self.classes.max())}, but {backbone.name} has "
                f"{len(backbone.class_names)} classes"
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
        gap = float((self.refined_by_strategy[self.strategy].sum(dim=1) - rows).abs().max())
        if gap > SUM_TOLERANCE * max(1.0, float(rows.abs().max())):
            raise RunError(
                f"run {self.path or ''}: its prototypes no longer sum to the model's head rows (gap {gap:.2g}); "
                "the run was altered or damaged: decompose again"
            )

    def head(self, backbone: Backbone) -> PrototypeHead:
        """The model's head rewritten with this run's prototypes (refused for another model)."""
        self.check_backbone(backbone)
        return PrototypeHead.from_decomposition(
            backbone.head_weight,
            backbone.head_bias,
            self.classes,
            self.refined_prototypes,
            self.nmf_prototypes,
            self.presence_scale,
            self.presence_damping,
        )

    def load_backbone(self, device: str | torch.device = "cpu") -> Backbone:
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
