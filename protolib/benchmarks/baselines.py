"""The parts benchmark's baselines: other prototypes from the same features the method factorises, k-means
centroids and PCA directions per class."""

from __future__ import annotations

import torch


def kmeans_prototypes(A: torch.Tensor, k: int, seed: int = 0, iterations: int = 50) -> torch.Tensor:
    """k-means centroids of the rows of A (k-means++ start, Lloyd iterations), (k, D)."""
    generator = torch.Generator().manual_seed(seed)
    A = A.float()
    centres = A[torch.randint(len(A), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(A, centres).pow(2).min(dim=1).values
        centres = torch.cat([centres, A[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(A, centres).argmin(dim=1)
        moved = torch.stack([A[assign == j].mean(dim=0) if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(moved, centres):
            break
        centres = moved
    return centres


def pca_prototypes(A: torch.Tensor, k: int) -> torch.Tensor:
    """The first k principal directions of A's rows, each signed so that its mean projection is positive."""
    A = A.float()
    _, _, Vh = torch.linalg.svd(A - A.mean(dim=0), full_matrices=False)
    directions = Vh[:k]
    signs = torch.sign(A.mean(dim=0) @ directions.T)
    return directions * torch.where(signs == 0, 1.0, signs).unsqueeze(-1)
