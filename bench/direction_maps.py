"""Part maps read by direction, not loudness: does the ground-truth parts benchmark's consistency change when
each discovery's part map is the cosine ``clamp(f) . p / (||clamp(f)|| ||p||)`` instead of the app's
``clamp(f) . p``? The same prototypes, test images, noise and scoring as ``parts-benchmark`` (k = true); only the
reading changes.

    OMP_NUM_THREADS=1 protoscope parts-benchmark --out runs/parts-tune --seeds 10 11 12 13
    OMP_NUM_THREADS=1 .venv/bin/python bench/direction_maps.py runs/parts-tune 10 11 12 13
    OMP_NUM_THREADS=1 .venv/bin/python bench/direction_maps.py runs/parts-bench 0 1 2 3 4 --only TEXT

Readings (``READINGS``), each applied to every cell's feature before the map ``clamp(f) . p`` (k-means: ``f . p``;
PartsNet's features are non-negative, so the two are the same here):

- ``dot``: the maps as the app shows them today (loud cells win);
- ``direction``: ``f / ||f||``, the cosine map (a cell wins where its direction matches p, however loud);
- ``direction, loud half``: ``f / max(||f||, median ||f|| of the photo's cells)``: louder cells than the photo's
  median are read by direction, quieter ones keep their (small) level, so that near-empty cells whose direction is
  noise cannot win. (A per-photo scale alone changes no map's argmax: each map's peak is within one photo.)
- ``a = 0.25 / 0.5 / 0.75``: ``f / ||f||^a``, the map ``||f||^(1 - a) ||p|| cos`` between the two: loudness counted
  with weight 1 - a (added after the first two readings were scored on the tuning seeds).

A part map's scale per prototype (``||p||``, ``presence_scale``) changes no argmax either, so it is left out.
``--only TEXT`` scores only the methods whose name holds TEXT, beside the paper's NMF, evidence-weighted NMF and
k-means; ``--only where`` prints instead where the maps peak: the loudness rank of each map's peak cell in its photo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _parts_ideas import BASELINES, ClassCells, Idea, class_prototypes, parse
from parts_ceiling import ORACLES, _oracle, argmax_oracle, keypoints_of, part_cells

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks.parts import BenchConfig, _test_classes
from protolib.evaluation.part_scores import protoeval_scores
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf


def _unit(X: torch.Tensor, dim: int = 1) -> torch.Tensor:
    return X / X.norm(dim=dim, keepdim=True).clamp_min(1e-12)  # an all-zero cell stays zero


def _loud_half(f: torch.Tensor) -> torch.Tensor:
    """(N, D, h, w): each cell divided by the larger of its norm and its photo's median cell norm."""
    norm = f.norm(dim=1, keepdim=True)
    median = norm.flatten(1).median(dim=1).values.view(-1, 1, 1, 1)
    return f / torch.maximum(norm, median).clamp_min(1e-12)


def _damped(a: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """f / ||f||^a: the map ``||f||^(1 - a) ||p|| cos``, loudness counted with weight 1 - a."""
    return lambda f: f / f.norm(dim=1, keepdim=True).clamp_min(1e-12) ** a


READINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "dot": lambda f: f,
    "a = 0.25": _damped(0.25),
    "a = 0.5": _damped(0.5),
    "a = 0.75": _damped(0.75),
    "direction": _unit,
    "direction, loud half": _loud_half,
}


class ReadBy:
    """A backbone whose spatial features are normalised per cell by a reading (what ``protoeval_scores`` reads)."""

    def __init__(self, backbone, normalise: Callable[[torch.Tensor], torch.Tensor]):
        self.backbone, self.normalise, self.device = backbone, normalise, backbone.device

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(self.backbone.spatial_features(x).float())


def spherical_kmeans(A: torch.Tensor, k: int, seed: int, iterations: int = 50) -> torch.Tensor:
    """k unit centroids maximising the summed cosine of the non-empty cells to their nearest centroid
    (k-means++ start on cosine distance, then Lloyd iterations), (k, D)."""
    X = _unit(A.float()[A.norm(dim=1) > 0])
    generator = torch.Generator().manual_seed(seed)
    centres = X[torch.randint(len(X), (1,), generator=generator)]
    for _ in range(1, k):
        distance = (1 - X @ centres.T).min(dim=1).values.clamp_min(0)
        centres = torch.cat([centres, X[torch.multinomial(distance + 1e-12, 1, generator=generator)]])
    for _ in range(iterations):
        assign = (X @ centres.T).argmax(dim=1)
        moved = _unit(torch.stack([X[assign == j].sum(dim=0) if (assign == j).any() else centres[j] for j in range(k)]))
        if torch.allclose(moved, centres):
            break
        centres = moved
    return centres


def _nmf(A: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return batched_nmf([A], k, random_state=seed).prototypes[0]


#: oracles fitted for the direction reading: told the parts (as ``parts_ceiling.py``), on unit-length cells
UNIT_MEAN = "oracle: mean of the part's unit-length cells"
UNIT_ARGMAX = "oracle: argmax fitted on unit-length cells, non-negative"
_memo: dict = {}  # the direction oracles of the class being scored, computed once


def _direction_oracle(name: str) -> Idea:
    def idea(c: ClassCells) -> torch.Tensor:
        key = (str(c.root), c.label)
        if key not in _memo:
            cells = part_cells(c.paths, c.label, keypoints_of(c.root / "data"), c.side, BenchConfig().size)
            U, flat = _unit(c.A.float()), cells.flatten(0, 1)
            means = torch.stack([U[flat[:, j]].mean(dim=0) for j in range(flat.shape[1])])
            _memo.clear()
            _memo[key] = {UNIT_MEAN: means, UNIT_ARGMAX: argmax_oracle(U, cells)}
        return _memo[key][name]

    return idea


IDEAS: dict[str, Idea] = {
    "NMF of unit-length cells": lambda c: _nmf(_unit(c.A), c.k, c.seed),
    "evidence-weighted NMF of unit-length cells": lambda c: _nmf(_unit(c.A) * evidence_weights(c.A, c.v)[:, None], c.k, c.seed),
    "spherical k-means": lambda c: spherical_kmeans(c.A, c.k, c.seed),
    **{name: _oracle(name) for name in ORACLES},
    **{name: _direction_oracle(name) for name in (UNIT_MEAN, UNIT_ARGMAX)},
}
SIGNED = (ORACLES[-1],)  # read from f . p: the signed oracle's map would lose its negative half to the clamp


def seed_scores(root: Path, seed: int, ideas: dict[str, Idea]) -> dict[str, dict[str, float]]:
    """reading -> method -> consistency % on one saved seed, k = true."""
    cfg = BenchConfig()
    backbone = build_parts_net(root / "parts_net.safetensors")
    methods = class_prototypes(root, "true", seed, {**BASELINES, **ideas}, backbone)
    kinds = {"maps": {m: "heatmap" if m.startswith("k-means") or m in SIGNED else "presence" for m in methods}}
    out = {}
    for reading, normalise in READINGS.items():
        classes = _test_classes(root / "data", cfg.num_classes)
        scores = protoeval_scores(ReadBy(backbone, normalise), classes, methods, kinds, seed=seed)
        out[reading] = {m: scores[m]["maps"]["consistency"] for m in methods}
    return out


def peak_loudness(root: Path, seed: int, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """reading -> method -> mean loudness rank of each map's peak cell among its photo's cells (0 = the quietest
    cell, 1 = the loudest), on the clean test images of one saved seed, k = true, on the feature grid."""
    backbone = build_parts_net(root / "parts_net.safetensors")
    ideas = {name: idea for name, idea in {**BASELINES, **IDEAS}.items() if name in names}
    prototypes = class_prototypes(root, "true", seed, ideas, backbone)
    ranks: dict[str, dict[str, list]] = {r: {name: [] for name in ideas} for r in READINGS}
    with torch.inference_mode():
        for c, x, _, _ in _test_classes(root / "data", BenchConfig().num_classes):
            f = backbone.spatial_features(x).float()  # (N, D, h, w), non-negative
            rank = f.norm(dim=1).flatten(1).argsort(dim=1).argsort(dim=1).float() / (f.shape[2] * f.shape[3] - 1)
            for reading, normalise in READINGS.items():
                g = normalise(f).flatten(2)  # (N, D, h * w)
                for name in ideas:
                    peak = torch.einsum("ndm,kd->nkm", g, prototypes[name][c]).argmax(dim=2)  # (N, k)
                    ranks[reading][name].append(rank.gather(1, peak).flatten())
    return {r: {name: float(torch.cat(v).mean()) for name, v in row.items()} for r, row in ranks.items()}


def main(out: str, seeds: list[int], only: str = "") -> None:
    torch.set_num_threads(1)
    if only == "where":
        names = ("the paper's NMF", "evidence-weighted NMF", "k-means centroids (heatmaps)", ORACLES[0], ORACLES[2])
        where = [peak_loudness(Path(out) / f"seed-{s}", s, names) for s in seeds]
        print(f"Loudness rank of each map's peak cell in its photo (0 = quietest, 1 = loudest), seeds {seeds}\n")
        print("| discovery | " + " | ".join(READINGS) + " |\n|---|" + "---|" * len(READINGS))
        for name in names:
            print(f"| {name} | " + " | ".join(f"{np.mean([w[r][name] for w in where]):.2f}" for r in READINGS) + " |")
        return
    ideas = {name: idea for name, idea in IDEAS.items() if only in name}
    per_seed = {}
    for s in seeds:
        per_seed[s] = seed_scores(Path(out) / f"seed-{s}", s, ideas)
        print(s, {r: {m: round(v, 1) for m, v in row.items()} for r, row in per_seed[s].items()}, flush=True)
    print(f"\nConsistency % (k = true), seeds {', '.join(map(str, seeds))}: mean over the seeds, per reading\n")
    print("| discovery | " + " | ".join(READINGS) + " |\n|---|" + "---|" * len(READINGS))
    for name in per_seed[seeds[0]]["dot"]:
        print(f"| {name} | " + " | ".join(f"{np.mean([per_seed[s][r][name] for s in seeds]):.1f}" for r in READINGS) + " |")
    print("\nPer seed\n\n| discovery | " + " | ".join(READINGS) + " |\n|---|" + "---|" * len(READINGS))
    for name in per_seed[seeds[0]]["dot"]:
        print(f"| {name} | " + " | ".join(" / ".join(f"{per_seed[s][r][name]:.1f}" for s in seeds) for r in READINGS) + " |")


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args[:-1] else ""
    args = [a for i, a in enumerate(args) if a != "--only" and (i == 0 or args[i - 1] != "--only")]
    out, seeds = parse(args, "direction_maps.py")
    main(out, seeds, only)
