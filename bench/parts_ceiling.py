"""The ceiling of the ground-truth parts benchmark: how consistent can any discovery's part maps be on these
features? An *oracle* discovery that is told where every part of every training photo is (the keypoints), read
through the same maps the app shows (``clamp(f) . p``, scored as ``parts-benchmark`` scores them, k = true).

    OMP_NUM_THREADS=1 protoscope parts-benchmark --out runs/parts-tune --seeds 10 11 12 13
    OMP_NUM_THREADS=1 .venv/bin/python bench/parts_ceiling.py runs/parts-tune 10 11 12 13

Oracles (each prototype j of a class from the cells of its true part j on the run's 60 training photos; a cell
is part j's when its centre lies within ``RADIUS`` px of part j's keypoint and the part is visible):

- ``mean``: p_j = the mean feature of part j's cells (what NMF would find with each cell's coefficients fixed to
  the true part: the least-squares P for an indicator E is the mean);
- ``contrast``: p_j = relu(mean of part j's cells - mean of every other cell of the class's photos);
- ``argmax, non-negative``: p_j >= 0 fitted (projected Adam) so that, photo by photo, the softmax over cells of
  ``f . p_j`` puts its mass on part j's cells: the protocol's own criterion (the argmax lands on the part),
  with the constraint every discovery here has (a non-negative part read by presence);
- ``argmax, signed`` (reference only: no discovery of this method gives signed parts): the same, unconstrained.

None is a proof of a bound (a discovery could in principle find a better direction than an oracle fit on 60
photos), but ``argmax, non-negative`` optimises the criterion itself with the answer known; a discovery that must
find the parts without the keypoints is not expected to beat it.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch
from _parts_ideas import ClassCells, parse, report

from protolib.benchmarks.parts import BenchConfig
from protolib.data.synthetic import parts_of_class

#: a cell belongs to a part when its centre is within this many pixels of the part's keypoint (parts have a
#: radius of 8 to 12.5 px at 112 px; cells are 8 px apart)
RADIUS = 8.0


def keypoints_of(data: Path, split: str = "train") -> dict[str, dict[int, tuple[float, float]]]:
    """file (relative to the split, e.g. ``c0/00012.png``) -> {global part: (x, y)} of its visible parts."""
    out: dict[str, dict[int, tuple[float, float]]] = {}
    with open(data / split / "keypoints.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["visible"] == "1":
                out.setdefault(row["file"], {})[int(row["part"])] = float(row["x"]), float(row["y"])
    return out


def part_cells(paths: list[str], label: int, keypoints: dict, side: int, size: int) -> torch.Tensor:
    """(n_photos, side * side, P) bool: which cells of each photo belong to each of the class's P parts."""
    stride = size / side
    centres = (torch.arange(side) * stride + (stride - 1) / 2).float()
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    parts = parts_of_class(label)
    cells = torch.zeros(len(paths), side * side, len(parts), dtype=torch.bool)
    for n, path in enumerate(paths):
        mine = keypoints.get(f"{Path(path).parent.name}/{Path(path).name}", {})
        for j, part in enumerate(parts):
            if part in mine:
                x, y = mine[part]
                cells[n, :, j] = ((cx - x) ** 2 + (cy - y) ** 2 <= RADIUS**2).flatten()
    return cells


def argmax_oracle(A: torch.Tensor, cells: torch.Tensor, signed: bool = False, steps: int = 300) -> torch.Tensor:
    """(P, D): per part, the direction whose per-photo softmax over cells puts most mass on the part's cells
    (photos where the part is not visible do not count); non-negative unless ``signed``."""
    n, m, P = cells.shape
    X = A.reshape(n, m, -1).float()
    scale = X.flatten(0, 1).norm(dim=1).mean()
    prototypes = []
    for j in range(P):
        on, seen = cells[:, :, j], cells[:, :, j].any(dim=1)
        start = X[on].mean(dim=0) if on.any() else X.mean(dim=(0, 1))
        p = (start / start.norm().clamp_min(1e-12) * 10 / scale).clone().requires_grad_(True)
        optimiser = torch.optim.Adam([p], lr=0.05)
        for _ in range(steps):
            score = torch.log_softmax(X[seen] @ p, dim=1)
            loss = -torch.logsumexp(score.masked_fill(~on[seen], -torch.inf), dim=1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if not signed:
                with torch.no_grad():
                    p.clamp_(min=0)
        prototypes.append(p.detach())
    return torch.stack(prototypes)


def oracles(A: torch.Tensor, cells: torch.Tensor) -> dict[str, torch.Tensor]:
    flat = cells.flatten(0, 1)  # (n * m, P)
    means = torch.stack([A[flat[:, j]].mean(dim=0) for j in range(flat.shape[1])])
    rest = torch.stack([A[~flat[:, j]].mean(dim=0) for j in range(flat.shape[1])])
    return {
        "oracle: mean of the part's cells": means,
        "oracle: relu(mean of the part's cells - mean of the others)": (means - rest).clamp_min(0),
        "oracle: argmax fitted, non-negative": argmax_oracle(A, cells),
        "oracle: argmax fitted, signed (reference)": argmax_oracle(A, cells, signed=True),
    }


def _oracles(cells: ClassCells) -> dict[str, torch.Tensor]:
    return oracles(cells.A, part_cells(cells.paths, cells.label, keypoints_of(cells.root / "data"), cells.side, BenchConfig().size))


ORACLES = (
    "oracle: mean of the part's cells",
    "oracle: relu(mean of the part's cells - mean of the others)",
    "oracle: argmax fitted, non-negative",
    "oracle: argmax fitted, signed (reference)",
)


_memo: dict = {}  # the four oracles of the class being scored, computed once


def _oracle(name: str):
    def idea(cells: ClassCells) -> torch.Tensor:
        key = (str(cells.root), cells.label)
        if key not in _memo:
            _memo.clear()
            _memo[key] = _oracles(cells)
        return _memo[key][name]

    return idea


if __name__ == "__main__":
    out, seeds = parse(sys.argv[1:], "parts_ceiling.py")
    report(out, seeds, {name: _oracle(name) for name in ORACLES}, signed=(ORACLES[-1],))
