"""Deep Feature Reweighting (Kirichenko et al. 2022), the shortcut benchmark's reference repair: the whole
linear head retrained as an L1-regularised multinomial logistic regression (solved here by FISTA, with
scikit-learn's objective) on standardised pooled features of a small group-balanced labelled set, its strength
chosen by worst-group accuracy on halves of that set."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..evaluation.intervention import group_accuracy

#: DFR's grid of inverse regularisation strengths (their Waterbirds grid)
DFR_C = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


def _balanced_halves(groups: list[str], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each group split in two random halves: (indices of the first halves, of the second)."""
    first, second = [], []
    for group in sorted(set(groups)):
        rows = rng.permutation([n for n, g in enumerate(groups) if g == group])
        first += rows[: len(rows) // 2].tolist()
        second += rows[len(rows) // 2 :].tolist()
    return np.array(first), np.array(second)


def l1_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, c: float, max_iter: int = 5000, tol: float = 1e-7
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression with an L1 penalty on the weights (not the bias), scikit-learn's
    objective ``sum_n CE_n + ||W||_1 / c``, solved by FISTA (accelerated proximal gradient) in float64.
    x (N, D), y (N,) -> weight (C, D), bias (C,)."""
    x, y = x.double(), torch.as_tensor(y, dtype=torch.long)
    n, d = x.shape
    onehot = F.one_hot(y, num_classes).double()
    step = 1.0 / (0.5 * float(torch.linalg.matrix_norm(torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1), ord=2)) ** 2)
    w, b = torch.zeros(num_classes, d, dtype=x.dtype), torch.zeros(num_classes, dtype=x.dtype)
    w_prev, b_prev, momentum = w, b, 1.0

    def objective(w: torch.Tensor, b: torch.Tensor) -> float:
        return float(F.cross_entropy(x @ w.T + b, y, reduction="sum") + w.abs().sum() / c)

    value = objective(w, b)
    for _ in range(max_iter):
        next_momentum = (1 + (1 + 4 * momentum**2) ** 0.5) / 2
        mix = (momentum - 1) / next_momentum
        vw, vb = w + mix * (w - w_prev), b + mix * (b - b_prev)
        residual = torch.softmax(x @ vw.T + vb, dim=1) - onehot  # gradient of the summed cross-entropy
        gw, gb = residual.T @ x, residual.sum(dim=0)
        w_prev, b_prev, momentum = w, b, next_momentum
        w = torch.sign(vw - step * gw) * (torch.abs(vw - step * gw) - step / c).clamp_min(0)  # soft threshold
        b = vb - step * gb
        new = objective(w, b)
        if new > value:  # restart the momentum when the objective goes up (O'Donoghue & Candes)
            momentum = 1.0
        if abs(value - new) <= tol * max(1.0, abs(value)):
            break
        value = new
    return w.float(), b.float()


def dfr_head(
    train_pooled: torch.Tensor,
    pooled: torch.Tensor,
    labels: torch.Tensor,
    groups: list[str],
    num_classes: int,
    seed: int = 0,
    halves: int = 5,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Deep Feature Reweighting: a new head (weight (C, D), bias (C,)) fitted on the group-balanced labelled
    set (``pooled``, ``labels``, ``groups``), features standardised with ``train_pooled``'s statistics, by
    :func:`l1_logistic_regression`; its ``c`` chosen from :data:`DFR_C` by mean worst-group accuracy over
    ``halves`` random group-balanced halves (fit on one, score the other). Returns (weight, bias, chosen c)
    in the original feature space."""
    mean, std = train_pooled.mean(dim=0), train_pooled.std(dim=0).clamp_min(1e-6)
    x, y = (pooled - mean) / std, torch.as_tensor(labels, dtype=torch.long)
    rng = np.random.default_rng(seed)
    splits = [_balanced_halves(groups, rng) for _ in range(halves)]
    scores = {}
    for c in DFR_C:
        worst = []
        for fit, score in splits:
            fit_rows, score_rows = torch.from_numpy(fit), torch.from_numpy(score)
            w, b = l1_logistic_regression(x[fit_rows], y[fit_rows], num_classes, c)
            worst.append(group_accuracy(x[score_rows] @ w.T + b, y[score_rows], [groups[n] for n in score_rows])["worst_group"])
        scores[c] = float(np.mean(worst))
    best = max(DFR_C, key=lambda c: scores[c])  # ties: the first (weakest regularisation), as argmax does
    w, b = l1_logistic_regression(x, y, num_classes, best)
    weight = w / std
    return weight, b - weight @ mean, best
