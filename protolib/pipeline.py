"""The whole method for a data folder: images -> features -> NMF -> scaling -> refinement -> Run.

Classes are processed in chunks, so memory stays bounded however many classes there are, and
each stage reports progress as (stage, classes or images done, total).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .backbones import Backbone
from .data import Problem, scan_split
from .decompose import DEFAULT_STRATEGY, MAX_K, STRATEGIES, decompose
from .features import Progress, extract_features
from .runs import Run, library_versions

STAGES = ("features", "nmf", "scaling", "refinement")


def feature_matrix(feats: torch.Tensor) -> torch.Tensor:
    """(N, H, W, D) features -> the non-negative (N*H*W, D) matrix A that NMF factorises."""
    return feats.reshape(-1, feats.shape[-1]).clamp_min(0)


def run_decomposition(
    backbone: Backbone,
    data: str | Path,
    split: str = "train",
    classes: list[str] | None = None,
    images_per_class: int | None = None,
    k: int = 3,
    strategy: str = DEFAULT_STRATEGY,
    seed: int = 0,
    solver: str = "hals",
    chunk_size: int = 32,
    cache_dir=None,
    progress: Progress | None = None,
) -> Run:
    """Decompose the head rows of the classes found in ``data/split``.

    Every strategy is computed (they are cheap next to feature extraction) so that evaluation can
    compare them; ``strategy`` picks the one the run's head uses.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k={k} is not sensible: choose between 1 and {MAX_K} prototypes per class")
    images = scan_split(data, split, backbone.labels, backbone.wnids, classes, images_per_class, min_images=k)
    report = progress or (lambda stage, done, total: None)
    problems: list[Problem] = list(images.problems)
    total_images, total_classes = len(images), len(images.classes)
    started = time.perf_counter()
    parts: list[dict] = []
    kept, used, seen = [], {}, 0
    for start in range(0, total_classes, chunk_size):
        chunk = images.classes[start : start + chunk_size]
        matrices, chunk_kept = [], []
        for cls in chunk:
            feats = extract_features(
                backbone,
                images.images[cls.folder],
                cache_dir=cache_dir,
                progress=lambda _stage, done, _total, base=seen: report("features", base + done, total_images),
            )
            seen += len(images.images[cls.folder])
            problems += feats.problems
            if len(feats.paths) < k:  # unreadable images left too few to find k parts
                problems.append(Problem(cls.folder, f"only {len(feats.paths)} readable images for k={k}; class skipped"))
                continue
            matrices.append(feature_matrix(feats.feats))
            chunk_kept.append(cls)
            used[cls.folder] = feats.paths
        if not chunk_kept:
            continue
        done = len(kept) + len(chunk_kept)
        v = backbone.head_weight.cpu()[[c.label for c in chunk_kept]]
        parts.append(
            decompose(
                matrices, v, k, seed=seed, solver=solver, device=backbone.device,
                on_stage=lambda stage, done=done: report(stage, done, total_classes),
            )
        )
        kept += chunk_kept
    if not kept:
        raise ValueError("no class could be decomposed: " + "; ".join(str(p) for p in problems[:5]))

    def cat(key):
        return torch.cat([getattr(part, key) for part in parts])

    manifest = {
        "backbone": backbone.name,
        "fingerprint": backbone.fingerprint,
        "weights": backbone.weights_source,
        "note": backbone.note,
        "k": k,
        "strategy": strategy,
        "seed": seed,
        "solver": solver,
        "data": str(Path(data).resolve()),
        "split": split,
        "images_per_class": images_per_class,
        "classes": [
            {"label": c.label, "name": c.name, "folder": c.folder, "n_images": len(used[c.folder])} for c in kept
        ],
        "images": used,
        "problems": [[p.path, p.reason] for p in problems],
        "seconds": round(time.perf_counter() - started, 2),
        "versions": library_versions(),
    }
    return Run(
        manifest,
        torch.tensor([c.label for c in kept]),
        cat("nmf_prototypes"),
        cat("alpha"),
        {s: torch.cat([part.refined[s] for part in parts]) for s in STRATEGIES},
        cat("feature_error"),
        cat("presence_scale"),
    )
