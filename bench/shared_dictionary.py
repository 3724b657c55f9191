"""Tried and not kept: discovery with a dictionary shared by all classes, a few parts found on every class's
cells at once and each class's own parts found on top of them (figures: README, "Ground-truth parts benchmark"
and "Discovery and the shortcut benchmark"; scripts ``discovery_tuning.py`` and ``shortcut_discovery_tuning.py``).

Why: in a photo most cells are background, and the backgrounds recur across classes while each object does
not. NMF of all classes' cells together with a few components spends them on what is common and loud, the
background; fitting each class with those components held fixed leaves its own parts to explain what the shared
ones do not, the object. A class's k prototypes are its ``k - s`` own parts followed by the ``s`` shared ones
(``s = min(SHARED_PARTS, k - 1)``, so a class always keeps at least one part of its own). Steps 2-3 read them
like any other prototypes, so the head stays exact.

1. ``shared = NMF(stack of every class's cells, s)``, each class weighted to count equally whatever its
   number of cells (so a class with more photos does not own the dictionary);
2. per class, ``A_c ~ E_c [P_c; shared]`` by HALS, updating ``E_c`` and ``P_c`` and never ``shared``.
"""

from __future__ import annotations

import torch
from _register import register_variant

from protolib.method.nmf import CHECK_EVERY, EPS, HALS_SWEEPS, NMFResult, batched_nmf

#: shared parts per run when none is named (the scripts try 1 to 4)
SHARED_PARTS = 2
NAME = "shared"


def shared_parts(matrices: list[torch.Tensor], s: int, max_iter: int, tol: float, seed: int) -> torch.Tensor:
    """(s, D): NMF of every class's cells stacked, each class scaled to the same total weight."""
    rows = min(len(A) for A in matrices)
    stacked = torch.cat([A.float() * (rows / len(A)) ** 0.5 for A in matrices])
    return batched_nmf([stacked], s, max_iter, tol, seed).prototypes[0]


def _fit_on_top(A: torch.Tensor, fixed: torch.Tensor, k_own: int, max_iter: int, tol: float, seed: int):
    """A (n, D) ~ E [P; fixed] by HALS with ``fixed`` (s, D) held; returns (P (k_own, D), relative error,
    updates made)."""
    gen = torch.Generator().manual_seed(seed)
    scale = (A.mean().clamp_min(0) / (k_own + len(fixed))).sqrt().item()
    P = torch.cat([torch.randn(k_own, A.shape[1], generator=gen).abs() * scale, fixed])
    E = torch.randn(A.shape[0], len(P), generator=gen).abs() * scale
    sq_norm = A.square().sum().clamp_min(EPS)
    initial = previous = None
    for step in range(1, max_iter + 1):
        PPt, APt = P @ P.T, A @ P.T
        for _ in range(HALS_SWEEPS):
            for j in range(len(P)):
                E[:, j] = (E[:, j] + (APt[:, j] - E @ PPt[:, j]) / PPt[j, j].clamp_min(EPS)).clamp_min(0)
        EtA, EtE = E.T @ A, E.T @ E
        for _ in range(HALS_SWEEPS):
            for j in range(k_own):  # only the class's own rows move
                P[j] = (P[j] + (EtA[j] - EtE[j] @ P) / EtE[j, j].clamp_min(EPS)).clamp_min(0)
        if step % CHECK_EVERY:  # as batched_nmf: progress is judged every CHECK_EVERY updates
            continue
        error = (sq_norm - 2 * (EtA * P).sum() + (EtE * (P @ P.T)).sum()).clamp_min(0).sqrt()
        if initial is None:
            initial = previous = error.clamp_min(EPS)
        elif (previous - error) / initial < tol:
            break
        previous = error
    return P[:k_own], float((A - E @ P).norm() / sq_norm.sqrt()), step


def shared_discovery(
    matrices: list[torch.Tensor], k: int, max_iter: int = 200, tol: float = 1e-4, seed: int = 0, s: int | None = None
) -> NMFResult:
    """The prototypes (C, k, D) of every class: its own ``k - s`` parts, then the ``s`` shared ones
    (``s`` defaults to ``SHARED_PARTS``, read at call time)."""
    s = min(SHARED_PARTS if s is None else s, k - 1)
    if s < 1 or len(matrices) < 2:  # nothing to share: the paper's NMF
        return batched_nmf(matrices, k, max_iter, tol, seed)
    matrices = [A.float().cpu() for A in matrices]
    shared = shared_parts(matrices, s, max_iter, tol, seed)
    prototypes, errors, steps = [], [], []
    for A in matrices:
        own, error, step = _fit_on_top(A, shared, k - s, max_iter, tol, seed)
        prototypes.append(torch.cat([own, shared]))
        errors.append(error)
        steps.append(step)
    return NMFResult(torch.stack(prototypes), torch.tensor(errors), torch.tensor(steps))


def register(s: int) -> None:
    """Make ``discovery="shared"`` (with ``s`` shared parts) run through the estimator, for these scripts only."""
    global SHARED_PARTS
    SHARED_PARTS = s
    register_variant(NAME, lambda matrices, k, head_rows, max_iter, tol, seed: shared_discovery(matrices, k, max_iter, tol, seed))
