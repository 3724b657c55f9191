"""Self-trained parts: the argmax oracle's objective (``parts_ceiling.py``) on pseudo-labels, no keypoints read.
Start from the evidence-weighted factorisation's prototypes of the class; then, for a few rounds, (a) in each
training photo give each prototype its cell: the peak of its map, the class's k prototypes on *distinct* cells
of the photo (Hungarian assignment on the k x cells matrix of maps, each map divided by its prototype's largest
value over the photos), optionally only the photos where that peak is among the prototype's strongest; (b) refit
each prototype p_j >= 0 (projected Adam, warm-started from p_j) so that, photo by photo, the softmax over cells
of ``f . p_j`` puts its mass on the cells it was given (the peak, and its neighbours within ``radius`` cells);
(c) stop when the assignments no longer change. Scored on the ground-truth parts benchmark's saved seeds
(``_parts_ideas.py``), maps as shown (``clamp(f) . p``), k = true:

    OMP_NUM_THREADS=1 .venv/bin/python bench/self_trained_parts.py runs/parts-tune 10 11 12 13 [--only TEXT]

Why: the oracle that fits this objective on the true parts' cells reaches 90.9 % (tuning seeds) where every
reconstruction objective stays near 55-78 %; the question is whether the objective still helps when the cells
are the discovery's own guesses.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _parts_ideas import ClassCells, parse, report
from scipy.optimize import linear_sum_assignment

from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf


def distinct_peaks(S: torch.Tensor, keep: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """S (n, m, k) maps -> (n, k) the cell each prototype gets in each photo (distinct per photo), and (n, k) bool
    whether that photo counts for the prototype: its assigned value is in the top ``keep`` share of its photos."""
    S = S / S.flatten(0, 1).max(dim=0).values.clamp_min(1e-12)  # each prototype's maps on one scale
    where = torch.empty(S.shape[0], S.shape[2], dtype=torch.long)
    for n in range(S.shape[0]):
        rows, cols = linear_sum_assignment(-S[n].T.numpy())  # prototypes x cells, maximise the summed maps
        where[n, torch.as_tensor(rows)] = torch.as_tensor(cols)
    value = S.gather(1, where.unsqueeze(1)).squeeze(1)  # (n, k)
    threshold = torch.quantile(value, 1 - keep, dim=0) if keep < 1 else torch.full((S.shape[2],), -torch.inf)
    return where, value >= threshold


def positives(where: torch.Tensor, side: int, radius: int) -> torch.Tensor:
    """(n, m, k) bool: the assigned cell of each prototype and the cells within ``radius`` grid steps of it."""
    y, x = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    y, x = y.flatten(), x.flatten()  # (m,)
    wy, wx = where // side, where % side  # (n, k)
    d2 = (y[None, :, None] - wy[:, None, :]) ** 2 + (x[None, :, None] - wx[:, None, :]) ** 2
    return d2 <= radius**2


def refit(X: torch.Tensor, P: torch.Tensor, on: torch.Tensor, seen: torch.Tensor, pull: float, steps: int) -> torch.Tensor:
    """(k, D): each p_j >= 0, from p_j, fitted so that on photos ``seen[:, j]`` the softmax over cells of X . p_j
    puts its mass on ``on[:, :, j]``; ``pull`` weighs the squared distance to the start (both at the fit's scale)."""
    scale = X.flatten(0, 1).norm(dim=1).mean()
    fitted = []
    for j in range(P.shape[0]):
        start = P[j] / P[j].norm().clamp_min(1e-12) * 10 / scale  # the oracle's starting magnitude
        p = start.clone().requires_grad_(True)
        optimiser = torch.optim.Adam([p], lr=0.05)
        mask = on[seen[:, j], :, j]
        Xj = X[seen[:, j]]
        for _ in range(steps):
            score = torch.log_softmax(Xj @ p, dim=1)
            loss = -torch.logsumexp(score.masked_fill(~mask, -torch.inf), dim=1).mean()
            if pull:
                loss = loss + pull * ((p - start) * scale).pow(2).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            with torch.no_grad():
                p.clamp_(min=0)
        fitted.append(p.detach())
    return torch.stack(fitted)


def self_trained(
    cells: ClassCells, rounds: int = 5, radius: int = 1, keep: float = 1.0, pull: float = 0.0, steps: int = 300
) -> torch.Tensor:
    """(k, D): the evidence-weighted factorisation's prototypes, self-trained as the module says."""
    n = len(cells.paths)
    A = cells.A.float()
    X = A.reshape(n, -1, A.shape[1])
    P = batched_nmf([A * evidence_weights(A, cells.v)[:, None]], cells.k, random_state=cells.seed).prototypes[0].float()
    previous = None
    for _ in range(rounds):
        where, seen = distinct_peaks(X @ P.T, keep)
        if previous is not None and torch.equal(where, previous):
            break
        previous = where
        P = refit(X, P, positives(where, cells.side, radius), seen, pull, steps)
    return P


IDEAS = {
    "self-trained (peak + neighbours, all photos)": lambda c: self_trained(c),
    "self-trained (peak only, all photos)": lambda c: self_trained(c, radius=0),
    "self-trained (peak + neighbours, top half of photos)": lambda c: self_trained(c, keep=0.5),
    # second batch, after the first: the unregularised refit drifts from the start on noisy pseudo-labels
    "self-trained (peak only, pull 0.01)": lambda c: self_trained(c, radius=0, pull=0.01),
    "self-trained (peak only, pull 0.1)": lambda c: self_trained(c, radius=0, pull=0.1),
    "self-trained (peak only, one round of 50 steps)": lambda c: self_trained(c, radius=0, rounds=1, steps=50),
}


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args[:-1] else ""
    args = [a for i, a in enumerate(args) if a != "--only" and (i == 0 or args[i - 1] != "--only")]
    out, seeds = parse(args, "self_trained_parts.py [--only TEXT]")
    np.set_printoptions(precision=3)
    report(out, seeds, {name: idea for name, idea in IDEAS.items() if only in name})
