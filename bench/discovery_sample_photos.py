"""Every discovery tried, on the sample photos with Lite0: exactness and signed held-out fidelity (steps 2-3 are the
same for all, so the head must stay exact and no refined prototype should flip).

    OMP_NUM_THREADS=1 .venv/bin/python bench/discovery_sample_photos.py [--cache DIR]

Decomposes 20 training photos per class at k = 3 (as ``protoscope decompose --images-per-class 20 --k 3``) with the
paper's NMF, ``evidence``, ``unit-evidence``, and the variants tried and not kept (``shared_dictionary.py`` with 2 shared parts,
``sparse_nmf.py`` with beta 0.1), then evaluates on all val photos (as ``protoscope evaluate``) and counts the
prototypes Evaluate marks dead or duplicate on the training photos (``prototype_health``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import shared_dictionary
import sparse_nmf
import torch

from protolib.backbones import load_backbone
from protolib.config import SAMPLE_DATA
from protolib.evaluation.metrics import evaluate_run
from protolib.evaluation.prototype_health import health_counts, training_health
from protolib.method import DEFAULT_STRATEGY
from protolib.pipeline import run_decomposition

VARIANTS = {
    "the paper's NMF": "nmf",
    "evidence-weighted NMF": "evidence",
    "evidence-weighted NMF of unit-length cells": "unit-evidence",
    "shared dictionary, 2 shared": "shared",
    "sparse NMF of evidence^6-weighted cells, beta 0.1": "sparse",
}


def main(cache: Path | None) -> None:
    torch.set_num_threads(1)
    shared_dictionary.register(2)
    sparse_nmf.register(0.1)
    backbone, data = load_backbone(), SAMPLE_DATA
    columns = "max |logit difference| | top-1 unchanged | signed fidelity, mean | worst | flips | dead / duplicate prototypes"
    print(f"| discovery | {columns} |")
    print("|---|---|---|---|---|---|---|")
    for label, name in VARIANTS.items():
        run = run_decomposition(backbone, data, images_per_class=20, k=3, cache_dir=cache, discovery=name)
        figures = evaluate_run(run, backbone, data, "val", cache_dir=cache)
        fidelity = figures["signed_fidelity"][DEFAULT_STRATEGY]
        health = health_counts(training_health(run, backbone, cache))
        print(
            f"| {label} | {figures['max_abs_logit_diff']:.1e} | {figures['top1_prototype'] == figures['top1_original']} "
            f"| {fidelity['mean']:.3f} | {fidelity['min']:.3f} | {fidelity['flips']} | {health['dead']} / {health['duplicates']} |",
            flush=True,
        )


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[args.index("--cache") + 1]) if "--cache" in args[:-1] else None)
