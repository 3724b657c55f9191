"""Non-negative matrix factorisation of many classes at once, in torch (CPU or CUDA).

Each class c has its own matrix ``A_c`` (n_c x D, n_c = images x positions) and is factorised
``A_c ~ E_c P_c`` independently; the classes are only stacked so that every step is one batched
matrix product. Matrices of unequal height are padded with zero rows whose coefficients start and
stay at zero, so the padding changes nothing: each class gets exactly the result it would get
alone, and that result depends only on the seed, not on which classes share the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

EPS = 1e-10
CHECK_EVERY = 10
HALS_SWEEPS = 3
SOLVERS = ("hals", "mu")


@dataclass
class NMFResult:
    prototypes: torch.Tensor  # (C, k, D): the rows of P, the part prototypes
    relative_error: torch.Tensor  # (C,): ||A - E P||_F / ||A||_F
    iterations: torch.Tensor  # (C,): updates each class took before it converged
    coefficients: list[torch.Tensor] | None = None  # E_c (n_c, k), when asked for


def _init(matrices: list[torch.Tensor], k: int, seed: int, n_max: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """|N(0,1)| * sqrt(mean(A)/k) per class, drawn from the same seed for every class."""
    C, D = len(matrices), matrices[0].shape[1]
    E = torch.zeros(C, n_max, k, dtype=dtype)
    P = torch.empty(C, k, D, dtype=dtype)
    for c, A in enumerate(matrices):
        gen = torch.Generator().manual_seed(seed)
        scale = (A.mean().clamp_min(0) / k).sqrt().item()
        P[c] = torch.randn(k, D, generator=gen, dtype=dtype).abs() * scale
        E[c, : A.shape[0]] = torch.randn(A.shape[0], k, generator=gen, dtype=dtype).abs() * scale
    return E, P


def batched_nmf(
    matrices: list[torch.Tensor],
    k: int,
    max_iter: int = 200,
    tol: float = 1e-4,
    random_state: int = 0,
    solver: str = "hals",
    device: torch.device | str | None = None,
    return_coefficients: bool = False,
) -> NMFResult:
    """Factorise every non-negative ``A_c`` (n_c, D) into k parts.

    ``solver``: "hals" (block coordinate descent, the default: lower error in fewer iterations)
    or "mu" (Lee & Seung multiplicative updates, Deep Feature Factorization's solver). A class
    stops when ``(previous error - error) / initial error < tol`` or after ``max_iter`` updates;
    as in scikit-learn, the error is checked every ``CHECK_EVERY`` updates, so "previous" is
    the error at the last check.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown NMF solver {solver!r}; use one of {', '.join(SOLVERS)}")
    if not matrices:
        raise ValueError("no matrices to factorise")
    if not 1 <= k <= min(min(A.shape) for A in matrices):
        raise ValueError(f"k={k} must be between 1 and the smallest matrix dimension")
    device = torch.device(device) if device is not None else matrices[0].device
    dtype = torch.float32
    n_max = max(A.shape[0] for A in matrices)
    A = torch.zeros(len(matrices), n_max, matrices[0].shape[1], dtype=dtype, device=device)
    for c, M in enumerate(matrices):
        if (M < 0).any():
            raise ValueError("NMF needs non-negative matrices (clamp the features at 0 first)")
        A[c, : M.shape[0]] = M.to(device, dtype)
    E, P = (t.to(device) for t in _init(matrices, k, random_state, n_max, dtype))
    heights = torch.tensor([M.shape[0] for M in matrices], device=device)
    row_mask = (torch.arange(n_max, device=device)[None, :] < heights[:, None]).unsqueeze(-1).to(dtype)
    sq_norm_A = A.square().sum(dim=(1, 2))
    iterations = torch.zeros(len(matrices), dtype=torch.long, device=device)

    # The batch shrinks as classes converge: a converged class's factors are final, and carrying it
    # along would cost as much per update as a class still working (measured: 2x the work at k = 3).
    E_out, P_out = E.clone(), P.clone()
    live = torch.arange(len(matrices), device=device)
    initial = previous = None
    PPt = P @ P.transpose(1, 2)
    for step in range(max_iter + 1):
        EtA, EtE = E.transpose(1, 2) @ A, E.transpose(1, 2) @ E
        if step % CHECK_EVERY == 0 or step == max_iter:
            # ||A - EP||^2 from products the update needs anyway
            error = (sq_norm_A[live] - 2 * (EtA * P).sum(dim=(1, 2)) + (EtE * PPt).sum(dim=(1, 2))).clamp_min(0).sqrt()
            if initial is None or previous is None:
                initial = previous = error.clamp_min(EPS)
                going = torch.ones_like(live, dtype=torch.bool)
            else:
                going = (previous - error) / initial >= tol
            if step == max_iter:
                going[:] = False
            previous = error
            if not going.all():
                done = live[~going]
                E_out[done], P_out[done] = E[~going], P[~going]
                live, A, E, P, PPt, EtA, EtE = (t[going] for t in (live, A, E, P, PPt, EtA, EtE))
                initial, previous = initial[going], previous[going]
        if not len(live):
            break
        P = _update_P(P, EtA, EtE, solver)
        PPt = P @ P.transpose(1, 2)
        E = _update_E(E, A @ P.transpose(1, 2), PPt, solver) * row_mask[live]
        iterations[live] += 1

    residual = torch.stack([(M.to(device, dtype) - E_out[c, : M.shape[0]] @ P_out[c]).norm() for c, M in enumerate(matrices)])
    coefficients = [E_out[c, : M.shape[0]].cpu() for c, M in enumerate(matrices)] if return_coefficients else None
    return NMFResult(P_out.cpu(), (residual / sq_norm_A.sqrt().clamp_min(EPS)).cpu(), iterations.cpu(), coefficients)


def _update_P(P: torch.Tensor, EtA: torch.Tensor, EtE: torch.Tensor, solver: str) -> torch.Tensor:
    if solver == "mu":
        return P * EtA / (EtE @ P).clamp_min(EPS)
    P = P.clone()
    for _, j in _sweeps(P.shape[1]):
        step = (EtA[:, j] - (EtE[:, j : j + 1] @ P).squeeze(1)) / EtE[:, j, j, None].clamp_min(EPS)
        P[:, j] = (P[:, j] + step).clamp_min(0)
    return P


def _update_E(E: torch.Tensor, APt: torch.Tensor, PPt: torch.Tensor, solver: str) -> torch.Tensor:
    if solver == "mu":
        return E * APt / (E @ PPt).clamp_min(EPS)
    E = E.clone()
    for _, j in _sweeps(E.shape[2]):
        step = (APt[:, :, j] - (E @ PPt[:, :, j : j + 1]).squeeze(2)) / PPt[:, j, j, None].clamp_min(EPS)
        E[:, :, j] = (E[:, :, j] + step).clamp_min(0)
    return E


def _sweeps(k: int) -> Iterator[tuple[int, int]]:
    """HALS sweeps over the k components: several per update, since they reuse the expensive
    products with A and cost only O(k^2) per row (accelerated HALS, Gillis & Glineur 2012)."""
    return ((sweep, j) for sweep in range(HALS_SWEEPS) for j in range(k))
