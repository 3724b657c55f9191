"""Prototypes of two runs matched one to one on the same photos: every heatmap upsampled to one common grid
(backbones differ in resolution), the Pearson correlation of two prototypes taken over all photos' positions,
and the Hungarian assignment (``scipy.optimize.linear_sum_assignment``) pairing them so that the summed
correlation is largest (``compare.py`` puts runs side by side with it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..explain import upsample

#: the grid every heatmap is upsampled to before correlating (56 = lcm of 7 and 8, Lite0's and Lite1's grids)
COMMON_GRID = 56


def _columns(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """(n, k, h, w) -> (n * grid * grid, k): each prototype's heatmap values over all photos' positions."""
    common = upsample(maps.float(), grid)  # (n, k, G, G)
    return common.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def correlation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every column of ``a`` (N, k1) with every column of ``b`` (N, k2): (k1, k2).
    A constant column (a heatmap flat on every photo) correlates 0 with everything."""
    a = a.double() - a.double().mean(dim=0)
    b = b.double() - b.double().mean(dim=0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    r = (a.T @ b) / (na.unsqueeze(1) * nb.unsqueeze(0)).clamp_min(1e-30)
    r[na < 1e-12] = 0
    r[:, nb < 1e-12] = 0
    return r.clamp(-1, 1).float()


@dataclass
class PairMatching:
    """Two runs' prototypes matched one to one (Hungarian on heatmap correlation)."""

    a: int  # index of the first run among the compared runs
    b: int
    correlation: torch.Tensor  # (k_a, k_b) over all photos
    pairs: list[tuple[int, int, float]]  # (prototype of a, prototype of b, r), by prototype of a
    per_photo: torch.Tensor  # (n,) mean matched correlation on each photo alone
    unmatched_a: list[int] = field(default_factory=list)
    unmatched_b: list[int] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return float(np.mean([r for _, _, r in self.pairs])) if self.pairs else 0.0

    @property
    def margins(self) -> list[float]:
        """Per matched pair, how much its r beats the best alternative of either prototype (small: a near tie)."""
        r, out = self.correlation, []
        for i, j, value in self.pairs:
            others = torch.cat([torch.cat([r[i, :j], r[i, j + 1 :]]), torch.cat([r[:i, j], r[i + 1 :, j]])])
            out.append(value - float(others.max()) if len(others) else 1.0)
        return out

    def partner(self, i: int) -> tuple[int, float] | None:
        """Run b's prototype matched to run a's prototype ``i``, with its r."""
        return next(((j, r) for p, j, r in self.pairs if p == i), None)


def match_pair(a: torch.Tensor, b: torch.Tensor, ia: int = 0, ib: int = 1, grid: int = COMMON_GRID) -> PairMatching:
    """Match the prototypes of two runs from their heatmaps ``a`` (n, k_a, h, w) and ``b`` (n, k_b, h', w')
    on the same n photos."""
    if len(a) != len(b):
        raise ValueError(f"the runs saw {len(a)} and {len(b)} photos: they must see the same ones")
    ca, cb = _columns(a, grid), _columns(b, grid)
    correlation = correlation_matrix(ca, cb)
    rows, cols = linear_sum_assignment(correlation.numpy(), maximize=True)
    pairs = sorted((int(i), int(j), float(correlation[i, j])) for i, j in zip(rows, cols))
    n, cells = len(a), grid * grid
    per_photo = torch.zeros(n)
    for photo in range(n):
        sa, sb = ca[photo * cells : (photo + 1) * cells], cb[photo * cells : (photo + 1) * cells]
        on_photo = correlation_matrix(sa, sb)
        per_photo[photo] = float(np.mean([float(on_photo[i, j]) for i, j, _ in pairs])) if pairs else 0.0
    return PairMatching(
        ia,
        ib,
        correlation,
        pairs,
        per_photo,
        sorted(set(range(a.shape[1])) - {i for i, _, _ in pairs}),
        sorted(set(range(b.shape[1])) - {j for _, j, _ in pairs}),
    )
