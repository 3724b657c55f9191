"""Scoring of discovery ideas on the ground-truth parts benchmark's saved seeds, as ``discovery_tuning.py`` scores
them (ProtoEval consistency on the test images, every idea read from its part maps ``clamp(f) . p``, k-means from
``f . p``), for ideas that need more than a class's cells: its photos, its keypoints, the backbone.
Used by ``parts_ceiling.py``, ``finer_grid.py`` and ``argmax_parts.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from protolib.backbones.parts_net import PartsNetBackbone, build_parts_net
from protolib.benchmarks.baselines import kmeans_prototypes
from protolib.benchmarks.parts import BenchConfig, _test_classes
from protolib.evaluation.metrics import training_matrices
from protolib.evaluation.part_scores import protoeval_scores
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf
from protolib.runs import load_run


@dataclass
class ClassCells:
    """What an idea may read of one class: its cells A (photos x grid cells, D), its head row v, k, the seed,
    the photos the run factorised, the grid side, the class label, the benchmark folder and the backbone."""

    A: torch.Tensor
    v: torch.Tensor
    k: int
    seed: int
    paths: list[str]
    side: int
    label: int
    root: Path
    backbone: PartsNetBackbone


Idea = Callable[[ClassCells], torch.Tensor]  # -> (k, D)

BASELINES: dict[str, Idea] = {
    "the paper's NMF": lambda c: batched_nmf([c.A], c.k, random_state=c.seed).prototypes[0],
    "evidence-weighted NMF": lambda c: batched_nmf(
        [c.A * evidence_weights(c.A, c.v)[:, None]], c.k, random_state=c.seed
    ).prototypes[0],
    "k-means centroids (heatmaps)": lambda c: kmeans_prototypes(c.A, c.k, c.seed),
}


def class_prototypes(
    root: Path, label: str, seed: int, ideas: dict[str, Idea], backbone: PartsNetBackbone
) -> dict[str, dict[int, torch.Tensor]]:
    """idea -> class -> (k, D) on one saved seed at k = ``label``, from the classes' cells of the paper's NMF's runs
    (every discovery's runs factorise the same cells)."""
    weight = backbone.head_weight.float()
    methods: dict[str, dict[int, torch.Tensor]] = {name: {} for name in ideas}
    for path in sorted((root / label).glob("run-k*")):
        if not path.name[5:].isdigit():  # another discovery's run of the same classes
            continue
        run = load_run(path, backbone)
        matrices = [A.float() for A in training_matrices(run, backbone, root / "features")]
        for A, c, entry in zip(matrices, run.classes.tolist(), run.manifest["classes"]):
            paths = run.manifest["images"][entry["folder"]]
            cells = ClassCells(A, weight[c], run.k, seed, paths, round((len(A) / len(paths)) ** 0.5), c, root, backbone)
            for name, idea in ideas.items():
                methods[name][c] = idea(cells)
    return methods


def seed_scores(
    root: Path, seed: int, ideas: dict[str, Idea], label: str = "true", signed: tuple[str, ...] = ()
) -> dict[str, float]:
    """Consistency % (maps shown) of the baselines and ``ideas`` on one saved seed, at k = ``label``; ideas whose
    name is in ``signed`` (and k-means) are read from their heatmaps ``f . p``, the others from presence."""
    cfg = BenchConfig()
    backbone = build_parts_net(root / "parts_net.safetensors")
    methods = class_prototypes(root, label, seed, {**BASELINES, **ideas}, backbone)
    readings = {"maps": {m: "heatmap" if m.startswith("k-means") or m in signed else "presence" for m in methods}}
    scores = protoeval_scores(backbone, _test_classes(root / "data", cfg.num_classes), methods, readings, seed=seed)
    return {m: scores[m]["maps"]["consistency"] for m in methods}


def report(out: str, seeds: list[int], ideas: dict[str, Idea], label: str = "true", signed: tuple[str, ...] = ()) -> None:
    """Score every seed, print each seed's line as it comes, then the markdown table (mean and per seed)."""
    torch.set_num_threads(1)
    per_seed = {}
    for s in seeds:
        per_seed[s] = seed_scores(Path(out) / f"seed-{s}", s, ideas, label, signed)
        print(s, {m: round(v, 1) for m, v in per_seed[s].items()}, flush=True)
    print(f"\nConsistency % (maps shown, k = {label}), seeds {', '.join(map(str, seeds))}: mean and per seed\n")
    print("| discovery | mean | per seed |\n|---|---|---|")
    for name in per_seed[seeds[0]]:
        values = [per_seed[s][name] for s in seeds]
        print(f"| {name} | {np.mean(values):.1f} | {' / '.join(f'{v:.1f}' for v in values)} |")


def parse(argv: list[str], usage: str) -> tuple[str, list[int]]:
    if len(argv) < 2 or not all(a.isdigit() for a in argv[1:]):
        raise SystemExit(f"usage: {usage} OUT SEED [SEED ...]  (OUT from `protoscope parts-benchmark`)")
    return argv[0], [int(s) for s in argv[1:]]
