"""How discovery ideas were tuned: ProtoEval consistency (maps shown) of each idea's prototypes on the ground-truth
parts benchmark's *tuning* seeds, never the reported ones (0-4).

First make the tuning seeds' data, models and runs (the runs are where each class's training photos are listed):

    OMP_NUM_THREADS=1 protoscope parts-benchmark --out runs/parts-tune --seeds 10 11 12 13
    OMP_NUM_THREADS=1 .venv/bin/python bench/discovery_tuning.py runs/parts-tune 10 11 12 13

``--only TEXT`` scores only the ideas whose name holds TEXT (beside the paper's NMF and k-means), e.g. ``--only shared``
for the shared dictionary (``shared_dictionary.py``, tried and not kept), also on the reported seeds once the choice is made.

Prints a markdown table: per idea, mean consistency % over the seeds at k = true and true + 2 (the same scoring,
test images and noise as the benchmark; every idea is read from its part maps clamp(f) . p, k-means from f . p).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from shared_dictionary import shared_discovery
from smooth_nmf import smooth_nmf
from sparse_nmf import sparse_nmf

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks.baselines import kmeans_prototypes
from protolib.benchmarks.parts import BenchConfig, _test_classes, k_label
from protolib.evaluation.metrics import training_matrices
from protolib.evaluation.part_scores import protoeval_scores
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf
from protolib.runs import load_run

#: (A (n, D), head row v (D,), k, seed) -> P (k, D); the seed is the benchmark seed's, as the runs use it
Idea = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def _nmf(A: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return batched_nmf([A], k, random_state=seed).prototypes[0]


def _unit(A: torch.Tensor) -> torch.Tensor:
    return A / A.norm(dim=1, keepdim=True).clamp_min(1e-10)


def _top_half(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    evidence = A @ v
    return A[evidence >= evidence.median()]


def _weighted(power: float) -> Idea:
    return lambda A, v, k, s: _nmf(A * evidence_weights(A, v, power)[:, None], k, s)


def _sparse(beta: float) -> Idea:
    return lambda A, v, k, s: sparse_nmf(A * evidence_weights(A, v, 6)[:, None], k, beta, s)


IDEAS: dict[str, Idea] = {
    "the paper's NMF": lambda A, v, k, s: _nmf(A, k, s),
    "NMF of unit-length cells": lambda A, v, k, s: _nmf(_unit(A), k, s),
    "NMF of the half of the cells with the most evidence": lambda A, v, k, s: _nmf(_top_half(A, v), k, s),
    "NMF of unit-length cells weighted by evidence^2": lambda A, v, k, s: _nmf(_unit(A) * evidence_weights(A, v, 2)[:, None], k, s),
    **{f"evidence-weighted NMF, exponent {p:g}": _weighted(p) for p in (1.5, 2, 3, 4, 6, 8)},
    **{f"sparse NMF (L1 on E, beta {b:g}) of evidence^6-weighted cells": _sparse(b) for b in (0.1, 0.3, 1)},
}


def _shared(n: int) -> Callable[[list[torch.Tensor], int, int], torch.Tensor]:
    return lambda matrices, k, seed: shared_discovery(matrices, k, seed=seed, s=n).prototypes


#: ideas that read the feature grid: (A, v, k, seed, grid) -> P (k, D)
def _smooth(gamma: float):
    return lambda A, v, k, s, grid: smooth_nmf(A * evidence_weights(A, v, 6)[:, None], k, grid, gamma, s)


GRID_IDEAS = {f"spatially smooth NMF (gamma {g:g}) of evidence^6-weighted cells": _smooth(g) for g in (0.1, 0.3, 1)}


#: ideas that read every class of the run at once: (matrices, k, seed) -> P (C, k, D)
JOINT_IDEAS = {f"shared dictionary, {n} shared": _shared(n) for n in (1, 2, 3)}


def seed_scores(root: Path, seed: int, label: str, only: str = "") -> dict[str, float]:
    """Consistency per idea whose name contains ``only`` (and always the paper's NMF and k-means)."""
    ideas = {name: idea for name, idea in IDEAS.items() if only in name or name == "the paper's NMF"}
    joint = {name: idea for name, idea in JOINT_IDEAS.items() if only in name}
    gridded = {name: idea for name, idea in GRID_IDEAS.items() if only in name}
    backbone = build_parts_net(root / "parts_net.safetensors")
    methods: dict[str, dict] = {name: {} for name in [*ideas, *joint, *gridded, "k-means centroids (heatmaps)"]}
    weight = backbone.head_weight.float()
    for path in sorted((root / label).glob("run-k*")):
        if not path.name[5:].isdigit():  # another discovery's run of the same classes
            continue
        run = load_run(path, backbone)
        matrices = [A.float() for A in training_matrices(run, backbone, root / "features")]
        for name, idea in joint.items():
            for c, P in zip(run.classes.tolist(), idea(matrices, run.k, seed)):
                methods[name][c] = P
        for A, c, entry in zip(matrices, run.classes.tolist(), run.manifest["classes"]):
            side = round((len(A) / len(run.manifest["images"][entry["folder"]])) ** 0.5)  # square photos, square grid
            for name, idea in gridded.items():
                methods[name][c] = idea(A, weight[c], run.k, seed, (side, side))
            for name, idea in ideas.items():
                methods[name][c] = idea(A.float(), weight[c], run.k, seed)
            methods["k-means centroids (heatmaps)"][c] = kmeans_prototypes(A, run.k, seed)
    readings = {"maps": {m: "heatmap" if m.startswith("k-means") else "presence" for m in methods}}
    scores = protoeval_scores(backbone, _test_classes(root / "data", BenchConfig().num_classes), methods, readings, seed=seed)
    return {m: scores[m]["maps"]["consistency"] for m in methods}


def main(out: str, seeds: list[int], only: str = "") -> None:
    torch.set_num_threads(1)
    labels = [k_label(offset) for offset in BenchConfig().k_offsets]
    table = {label: [seed_scores(Path(out) / f"seed-{s}", s, label, only) for s in seeds] for label in labels}
    print(f"Consistency % (maps shown), mean over seeds {', '.join(map(str, seeds))}\n")
    print("| discovery | " + " | ".join(f"k = {label}" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name in table[labels[0]][0]:
        print(f"| {name} | " + " | ".join(f"{np.mean([s[name] for s in table[label]]):.1f}" for label in labels) + " |")


if __name__ == "__main__":
    args = sys.argv[1:]
    only = args[args.index("--only") + 1] if "--only" in args[:-1] else ""
    args = [a for i, a in enumerate(args) if a != "--only" and (i == 0 or args[i - 1] != "--only")]
    if len(args) < 2 or not all(a.isdigit() for a in args[1:]):
        sys.exit("usage: discovery_tuning.py OUT SEED [SEED ...] [--only TEXT]  (OUT from `protoscope parts-benchmark`)")
    main(args[0], [int(s) for s in args[1:]], only)
