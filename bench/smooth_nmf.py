"""Tried and not kept: spatially smooth NMF (graph-regularised NMF, Cai et al. 2011, on the feature grid), each
part map pulled towards its 4 neighbours within the photo, on the evidence-weighted cells. For
``discovery_tuning.py`` only: the library's step 1 receives a class's cells without their grid.

``min ||A - E P||^2 + gamma * sum_j ||p_j||^2 e_j' L e_j`` (L the grid Laplacian of each photo) by HALS, with one
Jacobi step per column: ``e_j = relu((R p_j / ||p_j||^2 + gamma * (sum of the 4 neighbours' e_j)) / (1 + gamma *
neighbours))``; gamma = 0 is plain HALS.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from protolib.method.nmf import CHECK_EVERY, EPS, HALS_SWEEPS, batched_nmf


def _neighbours(e: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the 4 neighbours' values, number of neighbours) of each cell, photo by photo."""
    h, w = grid
    x = e.reshape(-1, 1, h, w)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    total = F.conv2d(x, kernel, padding=1).reshape(-1)
    count = F.conv2d(torch.ones(1, 1, h, w), kernel, padding=1).reshape(-1).repeat(x.shape[0])
    return total, count


def smooth_nmf(
    A: torch.Tensor, k: int, grid: tuple[int, int], gamma: float, seed: int = 0, max_iter: int = 200, tol: float = 1e-4
) -> torch.Tensor:
    """(k, D): the parts of A (rows = photos x grid cells, row-major, as ``feature_matrix`` flattens), started from
    the plain NMF with the same seed."""
    if len(A) % (grid[0] * grid[1]):
        raise ValueError(f"{len(A)} feature cells are not whole {grid[0]} x {grid[1]} grids")
    A = A.float()
    P = batched_nmf([A], k, max_iter=20, random_state=seed).prototypes[0].clone()
    E = torch.linalg.lstsq(P.T, A.T).solution.T.clamp_min(0)
    initial = previous = None
    for step in range(1, max_iter + 1):
        PPt, APt = P @ P.T, A @ P.T
        for _ in range(HALS_SWEEPS):
            for j in range(k):
                hals = E[:, j] + (APt[:, j] - E @ PPt[:, j]) / PPt[j, j].clamp_min(EPS)
                total, count = _neighbours(E[:, j], grid)
                E[:, j] = ((hals + gamma * total) / (1 + gamma * count)).clamp_min(0)
        EtA, EtE = E.T @ A, E.T @ E
        for _ in range(HALS_SWEEPS):
            for j in range(k):
                P[j] = (P[j] + (EtA[j] - EtE[j] @ P) / EtE[j, j].clamp_min(EPS)).clamp_min(0)
        if step % CHECK_EVERY:
            continue
        error = (A - E @ P).norm()
        if initial is None:
            initial = previous = error.clamp_min(EPS)
        elif (previous - error) / initial < tol:
            break
        previous = error
    return P
