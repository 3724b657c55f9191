"""Tried and not kept: NMF with sparse coefficients (an L1 penalty on E, Hoyer 2004), each cell explained by few
parts, on the evidence-weighted cells. For ``discovery_tuning.py`` only.

``min ||A - E P||^2 + lam * sum(E)`` over E, P >= 0 by HALS, the rows of P kept at unit length (otherwise the
penalty is undone by scaling P up and E down); ``lam = beta * mean row norm of A``, so beta is scale-free.
"""

from __future__ import annotations

import torch
from _register import register_variant

from protolib.method.discovery import evidence_weights
from protolib.method.nmf import CHECK_EVERY, EPS, HALS_SWEEPS, NMFResult, batched_nmf


def sparse_nmf(
    A: torch.Tensor, k: int, beta: float, seed: int = 0, max_iter: int = 200, tol: float = 1e-4, return_error: bool = False
):
    """(k, D): the parts, started from the plain NMF of A with the same seed (with ``return_error``, also
    ||A - E P|| / ||A||)."""
    A = A.float()
    P = batched_nmf([A], k, max_iter=20, random_state=seed).prototypes[0].clone()
    P = P / P.norm(dim=1, keepdim=True).clamp_min(EPS)
    E = (A @ P.T).clamp_min(0)
    lam = beta * float(A.norm(dim=1).mean())
    initial = previous = None
    for step in range(1, max_iter + 1):
        PPt, APt = P @ P.T, A @ P.T
        for _ in range(HALS_SWEEPS):
            for j in range(k):
                E[:, j] = (E[:, j] + (APt[:, j] - E @ PPt[:, j] - lam / 2) / PPt[j, j].clamp_min(EPS)).clamp_min(0)
        EtA, EtE = E.T @ A, E.T @ E
        for _ in range(HALS_SWEEPS):
            for j in range(k):
                P[j] = (P[j] + (EtA[j] - EtE[j] @ P) / EtE[j, j].clamp_min(EPS)).clamp_min(0)
                P[j] = P[j] / P[j].norm().clamp_min(EPS)
        if step % CHECK_EVERY:
            continue
        error = ((A - E @ P).square().sum() + lam * E.sum()).sqrt()
        if initial is None:
            initial = previous = error.clamp_min(EPS)
        elif (previous - error) / initial < tol:
            break
        previous = error
    if return_error:
        return P, float((A - E @ P).norm() / A.norm().clamp_min(EPS))
    return P


def sparse_discovery(
    matrices: list[torch.Tensor],
    k: int,
    head_rows: torch.Tensor,
    beta: float,
    seed: int = 0,
    max_iter: int = 200,
    tol: float = 1e-4,
) -> NMFResult:
    """The variant as a discovery: per class, sparse NMF of its evidence^6-weighted cells."""
    found = [
        sparse_nmf(A.float() * evidence_weights(A, v, 6.0)[:, None], k, beta, seed, max_iter, tol, True)
        for A, v in zip(matrices, head_rows)
    ]
    return NMFResult(torch.stack([P for P, _ in found]), torch.tensor([e for _, e in found]), torch.full((len(found),), max_iter))


def register(beta: float) -> None:
    """Make ``discovery="sparse"`` run through the estimator, for these scripts only."""
    register_variant(
        "sparse",
        lambda matrices, k, head_rows, max_iter, tol, seed: sparse_discovery(matrices, k, head_rows, beta, seed, max_iter, tol),
    )
