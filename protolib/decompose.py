"""Steps 2 and 3 of the method: scale the NMF prototypes to the head, then refine them so that
they sum to the class vector exactly while each keeps its heatmap.

All functions are batched over classes: ``P`` is (C, k, D), ``v`` is (C, D), and the training
features of class c are ``A_c`` (n_c, D), non-negative (the matrix NMF factorised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .nmf import batched_nmf

STRATEGIES = ("optimized", "paper", "uniform", "proportional")
DEFAULT_STRATEGY = "optimized"
MAX_K = 20
ENERGY_PENALTY = 0.001  # weight of the heatmap-energy penalty of the optimized strategy


def scale_prototypes(P: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """alpha = argmin ||v - sum_i alpha_i p_i||^2, closed form (pseudo-inverse, float64).

    The pseudo-inverse keeps the solution defined when NMF returns a zero or repeated prototype.
    """
    alpha = torch.linalg.pinv(P.double().transpose(1, 2)) @ v.double().unsqueeze(-1)
    return alpha.squeeze(-1).to(P.dtype)


def residual(P: torch.Tensor, alpha: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R = v - sum_i alpha_i p_i, (C, D)."""
    return v - (alpha.unsqueeze(-1) * P).sum(dim=1)


def heatmap_covariance(matrices: list[torch.Tensor], P: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Covariance over training positions of the heatmaps [A p_1 .. A p_k, A R], (C, k+1, k+1).

    Every refined prototype of the ``optimized`` strategy lies in span(p_1..p_k, R), so this small
    matrix is all one needs to know how a split of R changes each heatmap.
    """
    covariances = []
    for A, p, r in zip(matrices, P, R):
        H = A.to(p) @ torch.cat([p, r[None]]).T
        H = H - H.mean(dim=0)
        covariances.append(H.T @ H / H.shape[0])
    return torch.stack(covariances)


def refine(
    strategy: str,
    P: torch.Tensor,
    alpha: torch.Tensor,
    v: torch.Tensor,
    matrices: list[torch.Tensor] | None = None,
    covariance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Refined prototypes ``p~_i = alpha_i p_i + r_i`` with ``sum_i r_i = R`` (C, k, D).

    - ``uniform``: r_i = R / k.
    - ``proportional``: r_i = alpha_i R / sum_j alpha_j (uniform where sum_j alpha_j is ~0).
    - ``paper``: min sum_i ||Norm(A p_i) - Norm(A r_i)||^2 by L-BFGS from the uniform split.
    - ``optimized``: p~_i = sum_j Q_ij p_j + Q_i,k+1 R, with Q's columns summing to (alpha, 1),
      chosen to maximise the summed |Pearson(A p_i, A p~_i)| over the training positions. So
      the residual goes where it disturbs heatmaps least, and a part of it that looks like
      prototype j's heatmap can be handed to prototype j instead of blurring another one. Q has
      k^2 - 1 free numbers per class, fitted on a (k+1)^2 covariance estimated from thousands of
      positions: it cannot overfit the way ``paper`` does by hiding the residual in directions
      that barely vary on the training images. It starts from the closed-form variance split
      r_i ~ alpha_i^2 Var(A p_i) R and is never worse than it on the training data.
    """
    R = residual(P, alpha, v)
    k = P.shape[1]
    if strategy == "uniform":
        weights = torch.full_like(alpha, 1.0 / k)
    elif strategy == "proportional":
        total = alpha.sum(dim=1, keepdim=True)
        weights = torch.where(total.abs() > 1e-12, alpha / total.where(total.abs() > 1e-12, 1.0), 1.0 / k)
    elif strategy == "optimized":
        if covariance is None:
            if matrices is None:
                raise ValueError("the optimized strategy needs the training features (or their covariance)")
            covariance = heatmap_covariance(matrices, P, R)
        Q = _optimal_mixing(alpha, covariance)
        return _exact_sum(Q @ torch.cat([P, R.unsqueeze(1)], dim=1), v)
    elif strategy == "paper":
        if matrices is None:
            raise ValueError("the paper strategy needs the training features")
        return _exact_sum(alpha.unsqueeze(-1) * P + _paper_split(P, R, matrices), v)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return _exact_sum(alpha.unsqueeze(-1) * P + weights.unsqueeze(-1) * R.unsqueeze(1), v)


def _exact_sum(refined: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Put the last rounding error onto the prototype it changes least, so that the refined
    prototypes sum to v as exactly as floating point allows."""
    gap = v - refined.sum(dim=1)
    biggest = refined.norm(dim=-1).argmax(dim=1)
    refined = refined.clone()
    refined[torch.arange(len(v)), biggest] += gap
    return refined


def _correlations(Q: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Pearson(A p_i, A p~_i) for p~ = Q [P; R], from the heatmap covariance G; (C, k)."""
    k = Q.shape[1]
    cross = (Q @ G)[:, :, :k].diagonal(dim1=1, dim2=2)  # Cov(A p~_i, A p_i)
    var_refined = ((Q @ G) * Q).sum(dim=-1)
    var_p = G.diagonal(dim1=1, dim2=2)[:, :k]
    return cross / (var_p * var_refined).clamp_min(1e-30).sqrt()


def _optimal_mixing(alpha: torch.Tensor, G: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """argmax_Q sum_i |corr_i| with column sums (alpha, 1), batched over classes (float64 L-BFGS)."""
    alpha, G = alpha.double(), G.double()
    k = alpha.shape[1]
    share = alpha.square() * G.diagonal(dim1=1, dim2=2)[:, :k]
    split = share / share.sum(dim=1, keepdim=True).clamp_min(1e-30)  # the closed-form variance split
    start = torch.cat([torch.diag_embed(alpha), split.unsqueeze(-1)], dim=-1)  # (C, k, k+1)
    free = torch.zeros_like(start, requires_grad=True)

    def mixing():
        return start + free - free.mean(dim=1, keepdim=True)  # column sums stay (alpha, 1)

    def energy(Q):  # summed heatmap variance of the refined prototypes
        return ((Q @ G) * Q).sum(dim=(1, 2))

    start_energy = energy(start).clamp_min(1e-30)

    def objective(Q):  # per class, to be minimised
        # The penalty stops a degenerate optimum: huge, mutually cancelling multiples of the
        # prototypes swamp R and raise every correlation, while contributions explode.
        return -_correlations(Q, G).abs().sum(dim=1) + ENERGY_PENALTY * energy(Q) / start_energy

    optimizer = torch.optim.LBFGS([free], max_iter=steps, line_search_fn="strong_wolfe", tolerance_change=1e-14)

    def closure():
        optimizer.zero_grad()
        value = objective(mixing()).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        Q = mixing()
        worse = objective(Q) > objective(start)
        return torch.where(worse[:, None, None], start, Q).float()


def _paper_split(P: torch.Tensor, R: torch.Tensor, matrices: list[torch.Tensor], steps: int = 200) -> torch.Tensor:
    """The paper's objective with the constraint eliminated (r_k = R - sum_{i<k} r_i).

    ||Norm(A p) - Norm(A r)||^2 = 2 n (1 - Pearson(A p, A r)), and the Pearson correlation of
    two heatmaps is p S r / sqrt(p S p . r S r) for the feature covariance S, so each step costs
    a product with the D x D covariance instead of a pass over all n positions.
    """
    C, k, D = P.shape
    if k == 1:
        return R.unsqueeze(1)
    S = torch.stack([torch.cov(A.to(P).T, correction=0) for A in matrices])  # (C, D, D)
    n = torch.tensor([A.shape[0] for A in matrices], dtype=P.dtype)
    PS = P @ S
    var_p = (PS * P).sum(dim=-1)
    free = (R.unsqueeze(1) / k).expand(C, k - 1, D).clone().requires_grad_(True)

    def split():
        return torch.cat([free, (R - free.sum(dim=1)).unsqueeze(1)], dim=1)

    def objective():
        r = split()
        corr = (PS * r).sum(dim=-1) / (var_p * ((r @ S) * r).sum(dim=-1)).clamp_min(1e-30).sqrt()
        return (2 * n[:, None] * (1 - corr)).sum()

    optimizer = torch.optim.LBFGS([free], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    return split().detach()


@dataclass
class Decomposition:
    """Everything the method computes for a set of classes (tensors on the CPU)."""

    nmf_prototypes: torch.Tensor  # (C, k, D) P
    alpha: torch.Tensor  # (C, k)
    refined: dict[str, torch.Tensor]  # strategy -> (C, k, D) p~
    feature_error: torch.Tensor  # (C,) ||A - E P|| / ||A||
    nmf_iterations: torch.Tensor  # (C,)
    presence_scale: torch.Tensor  # (C, k) 99th percentile of A p_i: what "strongly present" means


def decompose(
    matrices: list[torch.Tensor],
    v: torch.Tensor,
    k: int,
    strategies: tuple[str, ...] = STRATEGIES,
    seed: int = 0,
    solver: str = "hals",
    device: torch.device | str = "cpu",
    on_stage: Callable[[str], None] | None = None,
) -> Decomposition:
    """Discovery, scaling and refinement for the classes whose features are ``matrices``;
    ``on_stage(name)`` is called as each of "nmf", "scaling", "refinement" completes."""
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k} is not sensible: choose between 1 and {MAX_K} prototypes per class")
    done = on_stage or (lambda stage: None)
    nmf = batched_nmf(matrices, k, seed=seed, solver=solver, device=device)
    done("nmf")
    P, v = nmf.prototypes, v.float().cpu()
    alpha = scale_prototypes(P, v)
    done("scaling")
    covariance = heatmap_covariance(matrices, P, residual(P, alpha, v)) if "optimized" in strategies else None
    refined = {s: refine(s, P, alpha, v, matrices, covariance) for s in strategies}
    done("refinement")
    # what "strongly present" means for each part: a high quantile of its heatmap on the training images
    presence = torch.stack([torch.quantile((A.to(p) @ p.T)[:100_000], 0.99, dim=0) for A, p in zip(matrices, P)])
    return Decomposition(P, alpha, refined, nmf.relative_error, nmf.iterations, presence.clamp_min(1e-12))
