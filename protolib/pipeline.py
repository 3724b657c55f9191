"""The whole method for a data folder: images -> features -> NMF -> scaling -> refinement -> Run.

Classes are processed in chunks, so memory stays bounded however many classes there are, and
each stage reports progress as (stage, classes or images done, total).
"""

from __future__ import annotations

import time
from itertools import islice
from pathlib import Path

import torch
from sklearn.base import clone

from .backbones import Backbone
from .data import BadImage, ClassFolder, Problem, scan_split
from .data.features import CacheDir, Progress, class_features
from .method import PartPrototypes, feature_matrix
from .method.estimator import json_params
from .runs import Run
from .runs.schema import library_versions

STAGES = ("features", "nmf", "scaling", "refinement")


def run_decomposition(
    backbone: Backbone,
    data: str | Path,
    split: str = "train",
    classes: list[str] | None = None,
    images_per_class: int | None = None,
    estimator: PartPrototypes | None = None,
    *,
    chunk_size: int = 32,
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
    **params: object,
) -> Run:
    """Decompose the head rows of the classes found in ``data/split``.

    ``estimator``: the (unfitted) :class:`PartPrototypes` to fit, cloned so it stays as it is; ``params``:
    its parameters (``k=3, strategy=..., random_state=...``), set on that clone or on a new one. A new one
    runs on the backbone's device unless ``device`` is given. The run's manifest records them as ``params``.
    """
    if estimator is None:
        params.setdefault("device", backbone.device)
    model = clone(estimator if estimator is not None else PartPrototypes()).set_params(**params)
    model.validate_params()  # before any backbone time is spent
    k = model.k
    images = scan_split(data, split, backbone.class_names, backbone.wnids, classes, images_per_class, min_images=k)
    report = progress or (lambda stage, done, total: None)
    problems: list[Problem] = list(images.problems)
    total_images, total_classes = len(images), len(images.classes)
    started = time.perf_counter()
    kept: list[ClassFolder] = []
    used: dict[str, list[str]] = {}
    per_class = class_features(
        backbone,
        images,
        cache_dir,
        lambda _stage, done, _total: report("features", done, total_images),
        problems=problems,
    )
    for _ in range(0, total_classes, chunk_size):  # one pass per chunk of classes, so memory stays bounded
        chunk_features, chunk_kept = [], []
        for cls, feats in islice(per_class, chunk_size):  # pulled lazily: only this chunk's features are held
            if isinstance(feats, BadImage):  # not one photo of this class is readable: the others go on
                problems.append(Problem(cls.folder, f"class skipped: {feats}"))
                continue
            if len(feats.paths) < k:  # unreadable images left too few to find k parts
                problems.append(Problem(cls.folder, f"only {len(feats.paths)} readable images for k={k}; class skipped"))
                continue
            chunk_features.append(feature_matrix(feats.feats))  # (positions, D): the class's features, held once
            chunk_kept.append(cls)
            used[cls.folder] = feats.paths
        if not chunk_kept:
            continue
        done = len(kept) + len(chunk_kept)
        labels = torch.cat([torch.full((len(A),), c.label) for A, c in zip(chunk_features, chunk_kept)])
        model.partial_fit(
            chunk_features,
            labels,
            backbone.head_weight,
            backbone.head_bias,
            on_stage=lambda stage, done=done: report(stage, done, total_classes),
        )
        kept += chunk_kept
    if not kept:
        raise ValueError("no class could be decomposed: " + "; ".join(str(p) for p in problems[:5]))
    by_label = {c.label: c for c in kept}
    kept = [by_label[int(c)] for c in model.classes_]  # the manifest lists the classes in the tensors' order

    manifest = {
        "backbone": backbone.name,
        "fingerprint": backbone.fingerprint,
        "weights": backbone.weights_source,
        "note": backbone.note,
        "params": json_params(model.get_params(deep=False)),
        "data": str(Path(data).resolve()),
        "split": split,
        "images_per_class": images_per_class,
        "classes": [{"label": c.label, "name": c.name, "folder": c.folder, "n_images": len(used[c.folder])} for c in kept],
        "images": used,
        "problems": [[p.path, p.reason] for p in problems],
        "seconds": round(time.perf_counter() - started, 2),
        "versions": library_versions(),
    }
    return Run.from_model(manifest, model)
