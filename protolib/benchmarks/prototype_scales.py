"""The shortcut benchmark's repairs by prototype scales, beside the mask rule (``mask_rule.py``): scales fitted on
a few group-balanced labels, the paper's Table-4 oracle (per test photo, with its label), and how many numbers
an edit changes."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..evaluation.intervention import oracle_scale
from ..method.head import PrototypeHead


def fit_scales(
    head: PrototypeHead,
    pooled: torch.Tensor,
    labels: torch.Tensor,
    groups: list[str],
    steps: int = 300,
    lr: float = 0.05,
) -> torch.Tensor:
    """(C, k) prototype scales in [0, 1] that minimise the group-balanced cross-entropy of the prototype
    head's logits on a labelled set: Adam from all ones, projected on [0, 1] after every step."""
    contributions = head.contributions(pooled).detach()
    index = {g: i for i, g in enumerate(sorted(set(groups)))}
    group_ids = torch.tensor([index[g] for g in groups])
    weights = 1.0 / torch.bincount(group_ids).float()[group_ids]
    weights = weights / weights.sum()
    scale = torch.ones(head.refined_prototypes.shape[:2], requires_grad=True)
    optimiser = torch.optim.Adam([scale], lr=lr)
    for _ in range(steps):
        loss = (F.cross_entropy(head.logits(pooled, contributions, scale), labels, reduction="none") * weights).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            scale.clamp_(0, 1)
    return scale.detach()


def oracle_logits(head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Logits after the paper's Table-4 oracle (per image, :func:`oracle_scale`) and the number of images it edited."""
    contributions, scale = oracle_scale(head, pooled, labels)
    return head.logits(pooled, contributions, scale), int((scale == 0).flatten(1).any(dim=1).sum())


def scales_changed(scale: torch.Tensor) -> int:
    """How many prototype scales an edit changes (those that differ from 1)."""
    return int((scale != 1).sum())
