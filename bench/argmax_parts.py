"""Parts that win their photo's argmax: a discovery that finds the parts' cells by clustering (NMF or k-means),
then fits each part's direction (non-negative) so that, photo by photo, its map peaks on the cells the clustering
gave it. The oracle of ``parts_ceiling.py`` with the clustering's cells in place of the keypoints' (no ground
truth read). Scored on the ground-truth parts benchmark's saved seeds (``_parts_ideas.py``):

    OMP_NUM_THREADS=1 .venv/bin/python bench/argmax_parts.py runs/parts-tune 10 11 12 13

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

from protolib.benchmarks.parts import kmeans_prototypes
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf


def nmf_owners(A: torch.Tensor, k: int, seed: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(n,) the part that explains most of each cell (largest E_ij ||p_j||), or -1 where the cell's weight is 0."""
    X = A if weights is None else A * weights[:, None]
    result = batched_nmf([X], k, seed=seed, return_coefficients=True)
    E, P = result.coefficients[0], result.prototypes[0]
    owners = (E * P.norm(dim=1)).argmax(dim=1)
    return owners if weights is None else torch.where(weights > 1e-3, owners, -1)


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
}


if __name__ == "__main__":
    out, seeds = parse(sys.argv[1:], "argmax_parts.py")
    report(out, seeds, IDEAS)
