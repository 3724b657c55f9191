"""Steps 2 and 3 of the method: scale the NMF prototypes to the head, then refine them so that
they sum to the class vector exactly while each keeps its heatmap, *with the sign the head gives it*.

All functions are batched over classes: ``P`` is (C, k, D), ``v`` is (C, D), and the training
features of class c are ``A_c`` (n_c, D), non-negative (the matrix NMF factorised). ``G`` is the
covariance over training positions of the heatmaps [A p_1 .. A p_k, A R], (C, k+1, k+1).

Signed heatmap fidelity of prototype i is Pearson(A alpha_i p_i, A p~_i) = sign(alpha_i) Pearson(A p_i,
A p~_i): below 0 the refined prototype has *flipped* (a page would say "more like this part, more
likely the class" while the part lowers the logit).
"""

from __future__ import annotations

import torch

STRATEGIES = ("optimized", "variance", "paper", "uniform", "proportional")
DEFAULT_STRATEGY = "optimized"
MAX_K = 20
#: Scaling guard: the terms of sum_i alpha_i p_i may cancel each other by at most this factor
#: (sum_i |alpha_i| |p_i| <= MAX_CANCELLATION |v|). On the sample photos real prototypes stay below
#: 1.5 up to k = 20; only (near-)duplicated, zero or rank-deficient prototypes reach it.
MAX_CANCELLATION = 10.0
#: Weight of the heatmap-energy penalty of ``optimized`` (relative to the variance split's energy),
#: chosen on fit/check halves of the training photos: it bounds sum_i |p~_i| without costing fidelity.
ENERGY_PENALTY = 1e-3
OPTIMIZER_STEPS = 50  # damped Newton iterations of ``optimized`` (< 30 on the sample photos)


def orientation(alpha: torch.Tensor) -> torch.Tensor:
    """sign(alpha) with sign(0) := +1: the orientation each refined heatmap must keep (C, k)."""
    return torch.where(alpha < 0, -1.0, 1.0).to(alpha.dtype)


def scale_prototypes(
    P: torch.Tensor, v: torch.Tensor, rtol: float | None = None, max_cancellation: float = MAX_CANCELLATION
) -> torch.Tensor:
    """alpha = argmin ||v - sum_i alpha_i p_i||^2, guarded against (near-)collinear prototypes; (C, k).

    Solved through the SVD of P in float64, P = U diag(s) V^T, as a truncated least squares:
    alpha(j) = sum_{l <= j} U_l (V_l . v) / s_l keeps the j largest singular values. Each class uses
    the largest j (the best fit) that is numerically safe:

    - s_j > rtol * s_1, rtol = max(k, D) * float32 eps by default (the usual lstsq cut-off for data
      of float32 precision): smaller singular values are rounding noise of the NMF;
    - sum_i |alpha_i| |p_i| <= max_cancellation * |v|: an alpha whose terms cancel each other by
      more than that (two near-identical prototypes get alpha = +-4e5) means nothing to a user, and
      its float32 refined prototypes can no longer sum to v, nor give the model's logits, to 1e-4.
      j = 1 always passes (the top singular vector of a non-negative P has one sign).

    Whatever v has along the dropped directions stays in the residual R = v - sum_i alpha_i p_i,
    so the decomposition stays exact. All-zero prototypes give alpha = 0 (and R = v).
    """
    C, k, D = P.shape
    rtol = max(k, D) * torch.finfo(torch.float32).eps if rtol is None else rtol
    Pd, vd = P.double(), v.double()
    U, s, Vh = torch.linalg.svd(Pd, full_matrices=False)  # (C,k,k), (C,k), (C,k,D)
    usable = s > rtol * s[:, :1]  # strict: an all-zero P has no usable direction
    coef = torch.where(usable, (Vh @ vd.unsqueeze(-1)).squeeze(-1) / s.where(usable, 1.0), 0.0)  # (C, k)
    levels = (U * coef.unsqueeze(1)).cumsum(dim=-1).transpose(1, 2)  # (C, j, k): alpha(j) for j = 1..k
    spread = (levels.abs() * Pd.norm(dim=-1).unsqueeze(1)).sum(-1)  # (C, j): sum_i |alpha_i| |p_i|
    safe = usable & (spread <= max_cancellation * vd.norm(dim=-1, keepdim=True))
    safe[:, 0] = usable[:, 0]
    j = torch.where(safe, torch.arange(k), -1).amax(dim=1)  # the largest safe level, -1 if none
    alpha = levels[torch.arange(C), j.clamp_min(0)] * (j >= 0).unsqueeze(-1)
    return alpha.to(P.dtype)


def approximation(P: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """sum_i alpha_i p_i, (C, D): what the scaled NMF prototypes alone make of the head rows."""
    return (alpha.unsqueeze(-1) * P).sum(dim=1)


def residual(P: torch.Tensor, alpha: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """R = v - sum_i alpha_i p_i (C, D), accumulated in float64."""
    return (v.double() - (alpha.double().unsqueeze(-1) * P.double()).sum(dim=1)).to(v.dtype)


def head_error(P: torch.Tensor, alpha: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """||v - sum_i alpha_i p_i|| / ||v|| per class, (C,): the share of the head row the prototypes miss."""
    return residual(P, alpha, v).norm(dim=1) / v.norm(dim=1).clamp_min(1e-12)


def heatmap_covariance(matrices: list[torch.Tensor], P: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Covariance over training positions of [A p_1 .. A p_k, A R], (C, k+1, k+1), float64.

    Every refined prototype of ``variance`` and ``optimized`` lies in span(p_1..p_k, R), so this
    small matrix is all they need: one (n_c, D) x (D, k+1) product per class.
    """
    covariances = []
    for A, p, r in zip(matrices, P, R):
        H = (A.to(p) @ torch.cat([p, r[None]]).T).double()
        H = H - H.mean(dim=0)
        covariances.append(H.T @ H / max(H.shape[0], 1))
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
    - ``variance``: the closed form r_i = s_i / sum_j s_j R, s_i = alpha_i^2 Var(A p_i).
    - ``optimized`` (the default): p~_i = sum_j Q_ij p_j + Q_i,k+1 R, with Q's columns summing to
      (alpha, 1), chosen to maximise the *signed* fidelity sum_i sign(alpha_i) Pearson(A p_i, A p~_i)
      on the training positions: a part of R that looks like prototype j's heatmap can go to
      prototype j instead of blurring another one. Q has k^2 - 1 free numbers per class, fitted on
      the (k+1)^2 heatmap covariance of thousands of positions, so it cannot overfit the way
      ``paper`` does (hiding the residual in directions that barely vary on the training images).
      It starts from ``variance`` and keeps its optimum only where that is better on the training
      data in mean and in the worst prototype.

    ``covariance``: :func:`heatmap_covariance` of the training features, when the caller has it.
    """
    R = residual(P, alpha, v)
    k = P.shape[1]
    if strategy == "uniform":
        weights = torch.full_like(alpha, 1.0 / k)
    elif strategy == "proportional":
        total = alpha.sum(dim=1, keepdim=True)
        weights = torch.where(total.abs() > 1e-12, alpha / total.where(total.abs() > 1e-12, 1.0), 1.0 / k)
    elif strategy in ("optimized", "variance"):
        if covariance is None:
            if matrices is None:
                raise ValueError(f"the {strategy} strategy needs the training features (or their covariance)")
            covariance = heatmap_covariance(matrices, P, R)
        refined = refine_optimized if strategy == "optimized" else refine_variance
        return refined(P, alpha, v, covariance)
    elif strategy == "paper":
        if matrices is None:
            raise ValueError("the paper strategy needs the training features")
        return exact_sum(alpha.unsqueeze(-1) * P + paper_split(P, R, matrices), v)
    else:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return exact_sum(alpha.unsqueeze(-1) * P + weights.unsqueeze(-1) * R.unsqueeze(1), v)


def exact_sum(refined: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Put the last rounding error onto the largest prototype (where it changes the heatmap least),
    so that the refined prototypes sum to v as exactly as float32 allows."""
    gap = v.double() - refined.double().sum(dim=1)
    biggest = refined.norm(dim=-1).argmax(dim=1)
    refined = refined.clone()
    refined[torch.arange(len(v)), biggest] += gap.to(refined.dtype)
    return refined


def variance_split(alpha: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Shares w (C, k), summing to 1, of the closed form r_i = w_i R, w_i = s_i / sum_j s_j,
    s_i = alpha_i^2 Var(A p_i) (the minimiser of sum_i Var(A r_i) / s_i under sum_i r_i = R).

    Where no prototype has any heatmap variance (all-zero or constant features, alpha = 0), the
    split falls back to uniform shares, so R is always handed out in full.
    """
    k = alpha.shape[1]
    s = alpha.double().square() * G.diagonal(dim1=1, dim2=2)[:, :k].double()
    total = s.sum(dim=1, keepdim=True)
    ok = total > 1e-300
    return torch.where(ok, s / total.where(ok, 1.0), 1.0 / k)


def refine_variance(P: torch.Tensor, alpha: torch.Tensor, v: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """``variance``: p~_i = alpha_i p_i + w_i R with the closed-form shares (C, k, D)."""
    R = residual(P, alpha, v)
    w = variance_split(alpha, G).to(P.dtype)
    return exact_sum(alpha.unsqueeze(-1) * P + w.unsqueeze(-1) * R.unsqueeze(1), v)


def refine_optimized(
    P: torch.Tensor,
    alpha: torch.Tensor,
    v: torch.Tensor,
    G: torch.Tensor,
    penalty: float = ENERGY_PENALTY,
    steps: int = OPTIMIZER_STEPS,
) -> torch.Tensor:
    """``optimized``: p~_i = sum_j Q_ij p_j + Q_i,k+1 R, with Q's columns summing to (alpha, 1),
    maximising the *signed* training fidelity sum_i orientation_i Pearson(A p_i, A p~_i).

    Starts from the closed-form variance split and, per class, keeps the optimum only if it is
    better than the start on the training data in mean *and* in its worst prototype (so it never
    creates a flip the closed form did not have). Everything is computed from G (C, k+1, k+1);
    the solver is a batched, per-class damped Newton method (see ``_optimal_mixing``).
    """
    R = residual(P, alpha, v)
    Q = _optimal_mixing(alpha, G, penalty, steps).to(P.dtype)
    return exact_sum(Q @ torch.cat([P, R.unsqueeze(1)], dim=1), v)


def paper_split(P: torch.Tensor, R: torch.Tensor, matrices: list[torch.Tensor], steps: int = 200) -> torch.Tensor:
    """``paper``: r (C, k, D) minimising sum_i ||Norm(A p_i) - Norm(A r_i)||^2 with sum_i r_i = R, by
    L-BFGS from the uniform split (the constraint eliminated: r_k = R - sum_{i<k} r_i).

    With the guards that keep it finite on degenerate
    features: the correlations are computed in float64 and clamped to [-1, 1] (with rank-deficient
    features r S r can round to ~0 or below, and the unclamped ratio ran off to -inf, then NaN),
    and a class whose result is still not finite gets the uniform split.
    """
    C, k, D = P.shape
    uniform = (R / k).unsqueeze(1).expand(C, k, D)
    if k == 1:
        return R.unsqueeze(1)
    S = torch.stack([torch.cov(A.to(P).T, correction=0) for A in matrices]).double()  # (C, D, D)
    n = torch.tensor([A.shape[0] for A in matrices], dtype=torch.float64)
    Pd, Rd = P.double(), R.double()
    PS = Pd @ S
    var_p = (PS * Pd).sum(dim=-1)
    free = (Rd.unsqueeze(1) / k).expand(C, k - 1, D).clone().requires_grad_(True)

    def split() -> torch.Tensor:
        return torch.cat([free, (Rd - free.sum(dim=1)).unsqueeze(1)], dim=1)

    def objective() -> torch.Tensor:
        r = split()
        corr = (PS * r).sum(dim=-1) / (var_p * ((r @ S) * r).sum(dim=-1)).clamp_min(1e-300).sqrt()
        return (2 * n[:, None] * (1 - corr.clamp(-1, 1))).sum()

    optimizer = torch.optim.LBFGS([free], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    r = split().detach().to(P.dtype)
    finite = torch.isfinite(r).all(dim=(1, 2))
    return torch.where(finite[:, None, None], r, uniform)


def _signed_correlations(Q: torch.Tensor, G: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """sign_i Pearson(A p_i, A p~_i) for p~ = Q [P; R], from the heatmap covariance G; (C, k).

    A prototype whose part heatmap is constant (G_ii = 0) has no shape to keep: it counts 0.
    """
    k = Q.shape[1]
    QG = Q @ G
    cross = QG[:, :, :k].diagonal(dim1=1, dim2=2)  # Cov(A p~_i, A p_i)
    var_refined = (QG * Q).sum(dim=-1)  # Var(A p~_i)
    var_p = G.diagonal(dim1=1, dim2=2)[:, :k]
    return sign * cross / (var_p * var_refined).clamp_min(1e-300).sqrt()


def _optimal_mixing(alpha: torch.Tensor, G: torch.Tensor, penalty: float, steps: int) -> torch.Tensor:
    """argmin_Q  -sum_i sign_i corr_i(Q) + penalty * energy(Q) / energy(start)  s.t. Q's columns sum
    to (alpha, 1); (C, k, k+1), float64.

    corr_i depends on row q_i of Q only, so the Hessian is block diagonal (one (k+1)^2 block per
    prototype) and the only coupling is the column-sum constraint: each step is a damped Newton
    step on the equality-constrained quadratic model, solved in closed form with one (k+1)^2
    system per class. Every class has its own damping (Levenberg-Marquardt: a step is kept only
    if it lowers that class's objective), so the classes converge independently and the cost per
    class does not grow with the number of classes. Coordinates are scaled by each basis heatmap's
    standard deviation, which makes the problem independent of the sizes of p_j and R.

    energy(Q) = sum_i Var(A p~_i): the penalty stops a degenerate optimum where large, mutually
    cancelling multiples of the prototypes drown R and the contributions explode.
    """
    alpha, G = alpha.double(), G.double()
    C, k = alpha.shape
    sign = orientation(alpha)
    start = torch.cat([torch.diag_embed(alpha), variance_split(alpha, G).unsqueeze(-1)], dim=-1)
    if k == 1:  # nothing to choose: p~_1 = v
        return start
    # normalised coordinates: Gn has a unit diagonal (basis heatmaps with ~no variance are floored)
    std = G.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    std = std.clamp_min(1e-9 * std.amax(dim=1, keepdim=True)).clamp_min(1e-150)
    Gn = G / (std.unsqueeze(-1) * std.unsqueeze(-2))
    a = Gn[:, :, :k].transpose(1, 2)  # (C, k, k+1): row i is Gn e_i, so corr_i = sign_i a_i.q_i / sqrt(g_i q_i Gn q_i)
    g = Gn.diagonal(dim1=1, dim2=2)[:, :k].clamp_min(1e-300)
    eye = torch.eye(k + 1, dtype=G.dtype)
    energy0 = ((start * std.unsqueeze(1)) @ Gn * (start * std.unsqueeze(1))).sum(dim=(1, 2)).clamp_min(1e-300)
    weight = 2 * penalty / energy0  # (C,)

    def objective(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (C,) to minimise, X = Q in normalised coordinates
        b = X @ Gn
        s = (b * X).sum(-1).clamp_min(1e-300)
        corr = (sign * (a * X).sum(-1) / (g * s).sqrt()).clamp(-1, 1)  # |corr| <= 1 despite rounding
        return -corr.sum(-1) + weight / 2 * (b * X).sum(dim=(1, 2)), corr

    X = start * std.unsqueeze(1)
    value, _ = objective(X)
    # A row whose part heatmap is constant (g ~ 0) or whose start is 0 (alpha_i = 0 and no share of
    # R) has no shape to keep or no defined correlation: it stays at its start and takes no part in
    # the trade (otherwise it would become a free dump for the other rows' residual).
    active = (g > 1e-12) & ((X @ Gn * X).sum(-1) > 0)  # (C, k)
    c = torch.where(active, sign / g.sqrt(), 0.0).unsqueeze(-1)  # (C, k, 1)
    damping = torch.full((C,), 1e-3, dtype=G.dtype)

    def outer(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(-1) * y.unsqueeze(-2)

    for _ in range(steps):
        # gradient and Hessian of each row's term f = sign u / sqrt(g s), u = a.q, s = q Gn q, b = Gn q
        b = X @ Gn
        s = (b * X).sum(-1, keepdim=True).clamp_min(1e-300)  # (C, k, 1)
        u = (a * X).sum(-1, keepdim=True)
        grad_f = c * (a / s.sqrt() - u * b / s**1.5)
        hess_f = c.unsqueeze(-1) * (
            -(outer(a, b) + outer(b, a)) / s.unsqueeze(-1) ** 1.5
            + 3 * u.unsqueeze(-1) * outer(b, b) / s.unsqueeze(-1) ** 2.5
            - u.unsqueeze(-1) * Gn.unsqueeze(1) / s.unsqueeze(-1) ** 1.5
        )
        grad = -grad_f + weight[:, None, None] * b  # (C, k, k+1)
        hess = -hess_f + weight[:, None, None, None] * Gn.unsqueeze(1)  # (C, k, k+1, k+1)
        hess = (hess + hess.transpose(-1, -2)) / 2
        # a class whose derivatives overflow (a row's heatmap ~ constant, e.g. rank-1 features) stops
        finite = torch.isfinite(grad).all(dim=(1, 2)) & torch.isfinite(hess).all(dim=(1, 2, 3))
        grad = torch.where(finite[:, None, None], grad, 0.0)
        hess = torch.where(finite[:, None, None, None], hess, eye)
        # shift every block to positive definite, plus the class's Levenberg-Marquardt damping
        lowest = torch.linalg.eigvalsh(hess)[..., 0].clamp_max(0)  # (C, k)
        shift = -1.01 * lowest + damping[:, None] * (1 + hess.diagonal(dim1=-2, dim2=-1).abs().amax(-1))
        M = torch.linalg.inv(hess + shift[..., None, None] * eye) * active[..., None, None]  # inactive rows: fixed
        # the constrained step: d_i = -M_i (grad_i + lam) with lam such that sum_i d_i = 0
        Mg = (M @ grad.unsqueeze(-1)).squeeze(-1)
        Msum = M.sum(1) + (active.sum(1) == 0).to(G.dtype)[:, None, None] * eye  # no active row: d = 0
        lam = -torch.linalg.solve(Msum, Mg.sum(1))  # (C, k+1)
        d = -(Mg + (M @ lam[:, None, :, None]).squeeze(-1))
        trial, _ = objective(X + d)
        good = torch.isfinite(trial) & (trial < value)
        X = torch.where(good[:, None, None], X + d, X)
        value = torch.where(good, trial, value)
        damping = torch.where(good, damping / 3, damping * 4).clamp(1e-9, 1e9)
        if bool(((damping >= 1e9) | (d.abs().amax(dim=(1, 2)) <= 1e-10 * X.abs().amax(dim=(1, 2)))).all()):
            break
    Q = X / std.unsqueeze(1)
    Q = Q - Q.sum(dim=1, keepdim=True) / k + start.sum(dim=1, keepdim=True) / k  # exact column sums
    # per class: keep the optimum only if it beats the closed form on the training data in mean
    # *and* in its worst prototype (so it can never create a flip the closed form does not have)
    corr, corr0 = _signed_correlations(Q, G, sign), _signed_correlations(start, G, sign)
    better = (corr.sum(1) > corr0.sum(1)) & (corr.min(dim=1).values >= corr0.min(dim=1).values)
    better &= torch.isfinite(Q).all(dim=(1, 2))
    return torch.where(better[:, None, None], Q, start)
