"""Dead and duplicate prototypes: which of a class's prototypes carry (almost) nothing of its logit, and
which find the same place as another.

A *dead* prototype's share of the class's logit, |mean contribution| over the sum of all k, is below
``DEAD_SHARE`` on the class's photos: its card would otherwise look like one that matters. A *duplicate*
has a part map (``PrototypeHead.presence``) whose correlation with an earlier prototype's, over every
position of the class's photos, is above ``DUPLICATE_CORRELATION``: the two mark the same cells, so one
of them says nothing the other does not. Both are read from the same numbers the pages show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..backbones import Backbone
from ..data import DataError
from ..data.features import CacheDir, extract_features
from ..method.head import read_cells
from ..runs import Run

DEAD_SHARE = 0.02
DUPLICATE_CORRELATION = 0.9


@dataclass(frozen=True)
class ClassHealth:
    """The health of one class's k prototypes on a set of its photos."""

    share: torch.Tensor  # (k,) |mean contribution| / sum_j |mean contribution_j|
    correlation: torch.Tensor  # (k, k) Pearson correlation of the part maps over all positions
    duplicate_of: tuple[int | None, ...]  # per prototype, the earlier prototype (0-based) it duplicates

    @property
    def dead(self) -> tuple[bool, ...]:
        return tuple(bool(s < DEAD_SHARE) for s in self.share)

    @property
    def n_dead(self) -> int:
        return sum(self.dead)

    @property
    def n_duplicate(self) -> int:
        return sum(d is not None for d in self.duplicate_of)

    def note(self, i: int) -> str:
        """What a card or a table says about prototype ``i`` (0-based): "" when it is neither."""
        notes = []
        if self.dead[i]:
            notes.append(f"dead: {100 * float(self.share[i]):.1f} % of the logit (below {100 * DEAD_SHARE:g} %)")
        j = self.duplicate_of[i]
        if j is not None:
            notes.append(f"duplicate of prototype {j + 1}: part maps correlate {float(self.correlation[i, j]):.2f}")
        return "; ".join(notes)


def class_health(features: torch.Tensor, refined: torch.Tensor, parts: torch.Tensor, damping: float = 0.0) -> ClassHealth:
    """Health of one class's prototypes on its photos.

    features (n, D): every position of the class's photos, unclamped, as the logit sees them (photos of one
    size, so the mean over positions is the mean contribution over photos); refined (k, D): the head's
    prototypes; parts (k, D): the head's parts, whose maps the app draws (``read_cells(f, damping) . part``, the
    head's ``presence_damping``).
    """
    features = features.float()
    contribution = (features @ refined.float().T).mean(dim=0)
    magnitude = contribution.abs()
    share = magnitude / magnitude.sum().clamp_min(1e-12)
    maps = read_cells(features, damping) @ parts.float().T  # (n, k)
    centred = maps - maps.mean(dim=0)
    norms = centred.norm(dim=0).clamp_min(1e-12)
    correlation = (centred.T @ centred) / (norms[:, None] * norms[None, :])
    duplicate_of = []
    for i in range(len(share)):
        earlier = [j for j in range(i) if float(correlation[i, j]) > DUPLICATE_CORRELATION]
        duplicate_of.append(max(earlier, key=lambda j: float(correlation[i, j])) if earlier else None)
    return ClassHealth(share, correlation, tuple(duplicate_of))


def training_health(run: Run, backbone: Backbone, cache_dir: CacheDir = None) -> dict[int, ClassHealth]:
    """Per decomposed class label, its :class:`ClassHealth` on the training photos the run was made from
    (the photos the cards and the prototype table read), from the feature cache. Raises DataError when a
    photo is gone."""
    head = run.head(backbone)
    health = {}
    for position, entry in enumerate(run.manifest["classes"]):
        paths = run.manifest["images"][entry["folder"]]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise DataError(f"the run's training image {missing[0]} is gone ({len(missing)} of {len(paths)} missing)")
        feats = extract_features(backbone, paths, cache_dir=cache_dir).feats
        health[int(run.classes[position])] = class_health(
            feats.reshape(-1, feats.shape[-1]),
            head.refined_prototypes[position],
            head.part_vectors[position],
            head.presence_damping,
        )
    return health


def health_counts(health: Mapping[int, ClassHealth]) -> dict:
    """How many prototypes of a run are dead and how many duplicate another (the k-choice aid counts them)."""
    return {"dead": sum(h.n_dead for h in health.values()), "duplicates": sum(h.n_duplicate for h in health.values())}
