"""How many cells the evidence weights leave to factorise: the effective number ``(sum w)^2 / sum w^2`` of the
weights ``discovery.evidence_weights`` gives each class's training cells, on the sample photos (Lite0, 20 photos per
class, as ``discovery_sample_photos.py`` decomposes them) and on one saved seed of the parts benchmark; then how
many of ``unit-evidence``'s prototypes on the sample photos are dead or duplicate (``prototype_health``) with the
weights' exponent lowered from 6 (a diagnostic: the parts benchmark chose 6).

    OMP_NUM_THREADS=2 .venv/bin/python bench/evidence_cells.py --cache runs/sample-cache runs/parts-bench/seed-0
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from protolib.backbones import load_backbone
from protolib.backbones.parts_net import build_parts_net
from protolib.config import SAMPLE_DATA
from protolib.evaluation.metrics import training_matrices
from protolib.evaluation.prototype_health import health_counts, training_health
from protolib.method import discovery
from protolib.method.discovery import evidence_weights
from protolib.pipeline import run_decomposition
from protolib.runs import load_run


def effective_cells(run, backbone, cache: Path) -> list[int]:
    """Per class of ``run``, the effective number of its training cells under the evidence weights."""
    weight = backbone.head_weight.float()
    counts = []
    for A, c in zip(training_matrices(run, backbone, cache), run.classes.tolist()):
        w = evidence_weights(A.float(), weight[c])
        counts.append(round(float(w.sum() ** 2 / (w**2).sum())))
    return counts


def main(cache: Path | None, bench_seed: Path) -> None:
    backbone = load_backbone()
    run = run_decomposition(backbone, SAMPLE_DATA, images_per_class=20, k=3, cache_dir=cache)
    cells = len(training_matrices(run, backbone, cache)[0])
    print(f"sample photos (Lite0, 20 photos per class, {cells} cells a class): {effective_cells(run, backbone, cache)}")
    parts_net = build_parts_net(bench_seed / "parts_net.safetensors")
    for path in sorted((bench_seed / "true").glob("run-k*")):
        if path.name[5:].isdigit():  # the paper's NMF's runs (the cells are the same for every discovery)
            found = load_run(path, parts_net)
            cells = len(training_matrices(found, parts_net, bench_seed / "features")[0])
            print(f"{bench_seed} {path.name} ({cells} cells a class): {effective_cells(found, parts_net, bench_seed / 'features')}")
    for power in (0.0, 1.0, 2.0, 4.0, 6.0):
        discovery.evidence_weights = lambda A, v, power=power: evidence_weights(A, v, power)  # what unit-evidence reads
        found = run_decomposition(backbone, SAMPLE_DATA, images_per_class=20, k=3, cache_dir=cache, discovery="unit-evidence")
        counts = health_counts(training_health(found, backbone, cache))
        print(f"unit-evidence, exponent {power:g}: dead / duplicate prototypes {counts}")
    discovery.evidence_weights = evidence_weights


if __name__ == "__main__":
    args = sys.argv[1:]
    cache = Path(args[args.index("--cache") + 1]) if "--cache" in args[:-1] else None
    rest = [a for i, a in enumerate(args) if a != "--cache" and (i == 0 or args[i - 1] != "--cache")]
    if len(rest) != 1:
        sys.exit("usage: evidence_cells.py [--cache DIR] <parts benchmark seed folder>")
    torch.set_num_threads(2)
    main(cache, Path(rest[0]))
