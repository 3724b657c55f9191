"""Parts that win their photo's argmax: a discovery that finds the parts' cells by clustering (NMF or k-means),
then fits each part's direction (non-negative) so that, photo by photo, its map peaks on the cells the clustering
gave it. The oracle of ``parts_ceiling.py`` with the clustering's cells in place of the keypoints' (no ground
truth read). Scored on the ground-truth parts benchmark's saved seeds (``_parts_ideas.py``):

    OMP_NUM_THREADS=1 .venv/bin/python bench/argmax_parts.py runs/parts-tune 10 11 12 13 [--only TEXT]

(``--only peak`` scores only the ideas whose name holds "peak", beside the paper's NMF, evidence and k-means.)

Why: on these features the part maps of the mean feature of a part's own cells (the oracle "mean of the part's
cells", what a perfect clustering would give) are no more consistent than NMF's, while a direction fitted to
put each photo's maximum on the part reaches 95 %: a presence map ``f . p`` peaks where f is loud along p, not
where p's part is. The fit keeps the clustering's notion of a part and changes only where its map peaks.
"""

from __future__ import annotations

import sys

import torch
from _parts_ideas import ClassCells, parse, report
from parts_ceiling import argmax_oracle

from protolib.benchmarks.baselines import kmeans_prototypes
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf


def nmf_owners(A: torch.Tensor, k: int, seed: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) the part that explains most of each cell (largest E_ij ||p_j||), or -1 where the cell's weight is 0."""
    X = A if weights is None else A * weights[:, None]
    result = batched_nmf([X], k, random_state=seed, return_coefficients=True)
    E, P = result.coefficients[0], result.prototypes[0]
    owners = (E * P.norm(dim=1)).argmax(dim=1)
    return owners if weights is None else torch.where(weights > 1e-3, owners, -1)


def peak_cells(A: torch.Tensor, k: int, seed: int, weights: torch.Tensor, photos: int, floor: float = 0.1) -> torch.Tensor:
    """(photos, cells, k) bool: per photo, the one cell where the evidence-weighted factorisation puts most of each
    part (its largest weighted coefficient), where that coefficient is at least ``floor`` of the part's largest."""
    result = batched_nmf([A * weights[:, None]], k, random_state=seed, return_coefficients=True)
    E = (result.coefficients[0] * result.prototypes[0].norm(dim=1)).reshape(photos, -1, k)
    peak, where = E.max(dim=1)  # (photos, k)
    cells = torch.zeros_like(E, dtype=torch.bool)
    cells.scatter_(1, where.unsqueeze(1), (peak >= floor * peak.max(dim=0).values).unsqueeze(1))
    return cells


def kmeans_owners(A: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return torch.cdist(A, kmeans_prototypes(A, k, seed)).argmin(dim=1)


def refit(cells: ClassCells, owners: torch.Tensor) -> torch.Tensor:
    """(k, D): each part's direction fitted so that its map's maximum falls on the cells it owns."""
    n = len(cells.paths)
    owned = torch.stack([owners == j for j in range(cells.k)], dim=1).reshape(n, -1, cells.k)
    return argmax_oracle(cells.A, owned)


IDEAS = {
    "NMF cells, argmax refit": lambda c: refit(c, nmf_owners(c.A, c.k, c.seed)),
    "evidence-weighted NMF cells, argmax refit": lambda c: refit(c, nmf_owners(c.A, c.k, c.seed, evidence_weights(c.A, c.v))),
    "k-means cells, argmax refit": lambda c: refit(c, kmeans_owners(c.A, c.k, c.seed)),
    "evidence-weighted NMF's peak cells, argmax refit": lambda c: argmax_oracle(
        c.A, peak_cells(c.A, c.k, c.seed, evidence_weights(c.A, c.v), len(c.paths))
    ),
}


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args[:-1] else ""
    args = [a for i, a in enumerate(args) if a != "--only" and (i == 0 or args[i - 1] != "--only")]
    out, seeds = parse(args, "argmax_parts.py [--only TEXT]")
    report(out, seeds, {name: idea for name, idea in IDEAS.items() if only in name})
