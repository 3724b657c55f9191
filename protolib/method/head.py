"""The prototype head: the model's linear head rewritten as a sum of per-prototype contributions.

``logit_c = sum_i mean_hw(f(x)_hw . p~_ci) + b_c``. Because the pooling is linear, every
contribution is ``pooled(x) . p~_ci``: intervention (scaling contributions) needs the pooled
features only, never the backbone.
"""

from __future__ import annotations

import torch
from torch import nn


def read_cells(features: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
    """Features (..., D) as part maps read them: clamped at 0 and, for ``damping`` a > 0, each cell divided by
    its length to the power a, so that a part map ``read_cells(f) . p = ||f||^(1 - a) ||p|| cos(f, p)`` counts
    a cell's loudness with weight 1 - a. At a = 0 (the paper's maps) the loudest cells win whatever their
    direction; a = 1 (direction only) breaks every part map measured (``bench/RESULTS.md``, section 14)."""
    cells = features.clamp_min(0)
    if damping == 0:
        return cells
    return cells / cells.norm(dim=-1, keepdim=True).clamp_min(1e-12) ** damping


class PrototypeHead(nn.Module):
    """Replaces a linear head; classes that were not decomposed keep their original rows.

    ``weight`` (C_all, D) and ``bias`` (C_all,) are the model's head; ``classes`` (C,) the labels
    that were decomposed and ``refined_prototypes`` (C, k, D) their refined prototypes. ``part_vectors``
    (C, k, D), optional, are the NMF prototypes scaled so that a heatmap value of 1 means "this
    part is strongly present": they draw part maps, while ``refined_prototypes`` give contributions.
    ``presence_damping`` is how part maps read a cell (:func:`read_cells`; 0, the paper's maps, unless the
    discovery says otherwise).
    """

    # Registered buffers, declared so that reading them is typed as tensors (not ``Tensor | Module``).
    weight: torch.Tensor
    bias: torch.Tensor
    classes: torch.Tensor
    refined_prototypes: torch.Tensor
    part_vectors: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        classes: torch.Tensor,
        refined_prototypes: torch.Tensor,
        part_vectors: torch.Tensor | None = None,
        presence_damping: float = 0.0,
    ) -> None:
        super().__init__()
        self.presence_damping: float = float(presence_damping)
        if refined_prototypes.shape[0] != len(classes) or refined_prototypes.shape[-1] != weight.shape[1]:
            raise ValueError(
                f"prototypes {tuple(refined_prototypes.shape)} do not fit {len(classes)} classes of a {weight.shape[1]}-d head"
            )
        self.register_buffer("weight", weight.detach().float().clone())
        self.register_buffer("bias", bias.detach().float().clone())
        self.register_buffer("classes", torch.as_tensor(classes, dtype=torch.long).clone())
        self.register_buffer("refined_prototypes", refined_prototypes.detach().float().clone())
        self.register_buffer(
            "part_vectors", (part_vectors if part_vectors is not None else refined_prototypes).detach().float().clone()
        )

    @classmethod
    def from_decomposition(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor,
        classes: torch.Tensor,
        refined: torch.Tensor,
        nmf_prototypes: torch.Tensor,
        presence_scale: torch.Tensor,
        presence_damping: float = 0.0,
    ) -> PrototypeHead:
        """The head of a decomposition: contributions from the ``refined`` prototypes, part maps from the
        NMF prototypes divided by ``presence_scale`` (C, k), so that 1 means "strongly present", reading
        cells with ``presence_damping``."""
        part_vectors = nmf_prototypes / presence_scale.unsqueeze(-1)
        return cls(weight.detach().cpu(), bias.detach().cpu(), classes, refined, part_vectors, presence_damping)

    @property
    def k(self) -> int:
        return self.refined_prototypes.shape[1]

    def contributions(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, D) -> contributions (B, C, k) of every decomposed class's prototypes."""
        return torch.einsum("bd,ckd->bck", pooled, self.refined_prototypes)

    def logits(self, pooled: torch.Tensor, contributions: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C_all) from cached contributions; ``scale`` (C, k) is the intervention
        (0 switches a prototype off, 1 leaves it); classes not decomposed use the original rows."""
        logits = pooled @ self.weight.T + self.bias
        scaled = contributions if scale is None else contributions * scale
        logits[:, self.classes] = scaled.sum(dim=-1) + self.bias[self.classes]
        return logits

    def forward(self, features: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Spatial features (B, H, W, D) or pooled (B, D) -> (logits (B, C_all), contributions (B, C, k))."""
        pooled = features.mean(dim=(1, 2)) if features.ndim == 4 else features
        contributions = self.contributions(pooled)
        return self.logits(pooled, contributions, scale), contributions

    def heatmaps(self, features: torch.Tensor, class_position: int) -> torch.Tensor:
        """Per-prototype heatmaps f(x) . p~_i of one decomposed class: (B, H, W, D) -> (B, k, H, W).
        Their spatial means are the contributions."""
        return torch.einsum("bhwd,kd->bkhw", features, self.refined_prototypes[class_position])

    def presence(self, features: torch.Tensor, class_position: int) -> torch.Tensor:
        """Where each part of one class is, (B, H, W, D) -> (B, k, H, W); 1 = strongly present."""
        return torch.einsum("bhwd,kd->bkhw", read_cells(features, self.presence_damping), self.part_vectors[class_position])

    def position(self, label: int) -> int:
        """Where a label sits among the decomposed classes."""
        hits = torch.eq(self.classes, label).nonzero()
        if len(hits) == 0:
            raise KeyError(f"class {label} was not decomposed in this run")
        return int(hits[0])
