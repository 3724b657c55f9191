"""How discovery ideas were tuned: ProtoEval consistency (maps shown) of each idea's prototypes on the ground-truth
parts benchmark's *tuning* seeds, never the reported ones (0-4).

First make the tuning seeds' data, models and runs (the runs are where each class's training photos are listed):

    OMP_NUM_THREADS=1 protoscope parts-benchmark --out runs/parts-tune --seeds 10 11 12 13
    OMP_NUM_THREADS=1 .venv/bin/python bench/discovery_tuning.py runs/parts-tune 10 11 12 13

Prints a markdown table: per idea, mean consistency % over the seeds at k = true and true + 2 (the same scoring,
test images and noise as the benchmark; every idea is read from its part maps clamp(f) . p, k-means from f . p).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks.parts import BenchConfig, _test_classes, k_label, kmeans_prototypes
from protolib.evaluation.metrics import training_matrices
from protolib.evaluation.part_scores import protoeval_scores
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf
from protolib.runs import load_run

#: (A (n, D), head row v (D,), k, seed) -> P (k, D); the seed is the benchmark seed's, as the runs use it
Idea = Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor]


def _nmf(A: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return batched_nmf([A], k, seed=seed).prototypes[0]


def _unit(A: torch.Tensor) -> torch.Tensor:
    return A / A.norm(dim=1, keepdim=True).clamp_min(1e-10)


def _top_half(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    evidence = A @ v
    return A[evidence >= evidence.median()]


def _weighted(power: float) -> Idea:
    return lambda A, v, k, s: _nmf(A * evidence_weights(A, v, power)[:, None], k, s)


IDEAS: dict[str, Idea] = {
    "the paper's NMF": lambda A, v, k, s: _nmf(A, k, s),
    "NMF of unit-length cells": lambda A, v, k, s: _nmf(_unit(A), k, s),
    "NMF of the half of the cells with the most evidence": lambda A, v, k, s: _nmf(_top_half(A, v), k, s),
    "NMF of unit-length cells weighted by evidence^2":
        lambda A, v, k, s: _nmf(_unit(A) * evidence_weights(A, v, 2)[:, None], k, s),
    **{f"evidence-weighted NMF, exponent {p:g}": _weighted(p) for p in (1.5, 2, 3, 4, 6, 8)},
}


def seed_scores(root: Path, seed: int, label: str) -> dict[str, float]:
    backbone = build_parts_net(root / "parts_net.safetensors")
    methods: dict[str, dict] = {name: {} for name in [*IDEAS, "k-means centroids (heatmaps)"]}
    weight = backbone.head_weight.float()
    for path in sorted((root / label).glob("run-k*")):
        if not path.name[5:].isdigit():  # another discovery's run of the same classes
            continue
        run = load_run(path, backbone)
        for A, c in zip(training_matrices(run, backbone, root / "features"), run.classes.tolist()):
            for name, idea in IDEAS.items():
                methods[name][c] = idea(A.float(), weight[c], run.k, seed)
            methods["k-means centroids (heatmaps)"][c] = kmeans_prototypes(A, run.k, seed)
    readings = {"maps": {m: "heatmap" if m.startswith("k-means") else "presence" for m in methods}}
    scores = protoeval_scores(backbone, _test_classes(root / "data", BenchConfig().num_classes), methods, readings,
                              seed=seed)
    return {m: scores[m]["maps"]["consistency"] for m in methods}


def main(out: str, seeds: list[int]) -> None:
    torch.set_num_threads(1)
    labels = [k_label(offset) for offset in BenchConfig().k_offsets]
    table = {label: [seed_scores(Path(out) / f"seed-{s}", s, label) for s in seeds] for label in labels}
    print(f"Consistency % (maps shown), mean over tuning seeds {', '.join(map(str, seeds))}\n")
    print("| discovery | " + " | ".join(f"k = {label}" for label in labels) + " |")
    print("|---|" + "---|" * len(labels))
    for name in table[labels[0]][0]:
        print(f"| {name} | " + " | ".join(f"{np.mean([s[name] for s in table[label]]):.1f}" for label in labels) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: discovery_tuning.py OUT SEED [SEED ...]  (OUT from `protoscope parts-benchmark --seeds ...`)")
    main(sys.argv[1], [int(s) for s in sys.argv[2:]])
