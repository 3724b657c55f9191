"""ProtoEval scores of sets of prototypes on a backbone: the protocol of ``protoeval.py`` applied to
activation maps computed from features, for the ground-truth parts benchmark and for CUB-200-2011.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..backbones import Backbone
from ..data import DataError
from ..data.cub import CubImage, load_example, read_cub
from ..data.features import Progress
from ..method.head import read_cells
from ..runs import Run
from .metrics import oriented_prototypes
from .protoeval import add_protoeval_noise, consistency_percent, part_marks, stability_percent

# -- the protocol for any backbone -------------------------------------------------------------
MAPS = ("heatmap", "coefficients")
KINDS = ("heatmap", "presence", "coefficients")
Readings = Mapping[str, Mapping[str, str]]  # column -> {method: map kind}


def prototype_maps(spatial: torch.Tensor, prototypes: torch.Tensor, kind: str = "heatmap", damping: float = 0.0) -> torch.Tensor:
    """Where each of a class's prototypes (k, D) is, on spatial features (N, D, h, w) -> (N, k, h, w).

    ``heatmap``: ``f . p``, the method's heatmaps (whose means are the contributions). ``presence``:
    ``read_cells(f, damping) . p`` (``clamp(f, 0) . p`` at damping 0), the part maps the app draws
    (``PrototypeHead.presence``, when ``prototypes`` are the head's ``part_vectors``: the NMF prototypes divided
    by their presence scale, and ``damping`` its ``presence_damping``). ``coefficients``:
    the least-squares coefficients of ``f`` on the k prototypes together, ``f . pinv(P)``, i.e. how much
    of each prototype the feature holds *given the others*. Prototypes that share a large common
    component (NMF's are non-negative, so they always do) have heatmaps that light up on each other's
    parts; the coefficients separate them. For orthonormal prototypes (PCA) both are the same.
    """
    P = prototypes.to(spatial.device).float()
    if kind == "coefficients":
        return torch.einsum("ndhw,dk->nkhw", spatial.float(), torch.linalg.pinv(P))
    if kind == "presence":
        return torch.einsum("nhwd,kd->nkhw", read_cells(spatial.float().permute(0, 2, 3, 1), damping), P)
    if kind != "heatmap":
        raise ValueError(f"unknown map {kind!r}; choose one of {', '.join(KINDS)}")
    return torch.einsum("ndhw,kd->nkhw", spatial.float(), P)


@torch.inference_mode()
def _spatial(backbone: Backbone, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = [backbone.spatial_features(x[i : i + batch_size].to(backbone.device)).float().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def _readings(maps: tuple[str, ...] | Readings, methods: Iterable[str]) -> dict[str, dict[str, str]]:
    """``maps`` as column -> {method: kind}; a tuple of kinds reads every method with each kind."""
    methods = list(methods)
    readings = (
        {kind: dict.fromkeys(methods, kind) for kind in maps}
        if isinstance(maps, tuple)
        else {column: dict(per_method) for column, per_method in maps.items()}
    )
    for column, per_method in readings.items():
        if set(per_method) != set(methods):
            raise ValueError(f"reading {column!r} names methods {sorted(per_method)}, not {sorted(methods)}")
        for kind in per_method.values():
            prototype_maps(torch.zeros(1, 1, 1, 1), torch.ones(1, 1), kind)  # unknown kinds fail here
    return readings


def protoeval_scores(
    backbone: Backbone,
    classes: Iterable[tuple[object, torch.Tensor, np.ndarray, np.ndarray]],
    prototypes: Mapping[str, Mapping[Any, torch.Tensor]],
    maps: tuple[str, ...] | Readings = MAPS,
    seed: int = 0,
    batch_size: int = 32,
    damping: Mapping[str, float] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """ProtoEval consistency and stability (%) of several sets of prototypes on the same images:
    ``result[method][column] = {"consistency": .., "stability": ..}``.

    ``maps``: a tuple of map kinds (see :func:`prototype_maps`), each read for every method under its
    own name; or named readings, column -> {method: kind}, so that each method can be read from the map
    it is shown with (the benchmark reads NMF prototypes from ``presence`` maps and the others from
    heatmaps in one column). ``classes`` yields, per class, (key, normalised images (N, 3, S, S),
    keypoints (N, P, 2) in pixel-centre coordinates of the S x S image, visible (N, P));
    ``prototypes[method][key]`` is that class's (k, D). Each image gets one noisy copy (seeded), shared
    by all methods, so the methods are compared on identical inputs. ``damping[method]`` (0 when absent) is
    how that method's ``presence`` maps read a cell (its runs' ``presence_damping``).
    """
    readings = _readings(maps, prototypes)
    generator = torch.Generator().manual_seed(seed)
    clean: dict[tuple[str, str], list[np.ndarray]] = {(m, column): [] for m in prototypes for column in readings}
    noisy: dict[tuple[str, str], list[np.ndarray]] = {(m, column): [] for m in prototypes for column in readings}
    visibles = []
    for key, x, keypoints, visible in classes:
        size = x.shape[-1]
        features = _spatial(backbone, x, batch_size)
        features_noisy = _spatial(backbone, add_protoeval_noise(x, generator=generator), batch_size)
        visibles.append(visible)
        for (method, column), marks in clean.items():
            p, kind, a = prototypes[method][key], readings[column][method], (damping or {}).get(method, 0.0)
            marks.append(part_marks(prototype_maps(features, p, kind, a), keypoints, visible, size))
            noisy[method, column].append(part_marks(prototype_maps(features_noisy, p, kind, a), keypoints, visible, size))
    if not visibles:
        raise ValueError("no images to evaluate")
    scores: dict[str, dict[str, dict[str, float]]] = {m: {} for m in prototypes}
    for (method, column), marks in clean.items():
        scores[method][column] = {
            "consistency": consistency_percent(marks, visibles),
            "stability": stability_percent(marks, noisy[method, column]),
        }
    return scores


# -- ProtoEval on CUB ------------------------------------------------------------------------------
def _class_batches(
    backbone: Backbone, images: dict[int, list[CubImage]], crop: bool, progress: Progress | None
) -> Iterator[tuple[int, torch.Tensor, np.ndarray, np.ndarray]]:
    size = backbone.preprocessing.crop_size
    total, done = sum(len(v) for v in images.values()), 0
    for position, members in images.items():
        xs, kps = [], []
        for image in members:
            picture, keypoints = load_example(image, size, crop)
            xs.append(backbone.preprocessing.normalize(picture))
            kps.append(keypoints)
        done += len(members)
        if progress:
            progress("protoeval", done, total)
        yield position, torch.stack(xs), np.stack(kps), np.stack([image.visible for image in members])


def cub_protoeval(
    run: Run,
    backbone: Backbone,
    root: str | Path,
    images_per_class: int | None = None,
    crop: bool = True,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """ProtoEval consistency and stability (%) of a run's prototypes on CUB's official test images.

    Each test image is cropped to its bounding box and resized to the model's input size (224 px:
    the protocol's setting), normalised with the model's own statistics. The run's classes are
    matched to CUB's by class folder name (the names :func:`export_image_folder` writes). Scores are
    given for the NMF prototypes (``nmf``) and for the run's refined prototypes turned towards their
    parts (``refined``, see ``metrics.oriented_prototypes``), each read from its heatmaps and from its
    coefficients (see :func:`prototype_maps`).
    """
    run.check_backbone(backbone)
    cub = read_cub(root)
    position = {c["folder"]: i for i, c in enumerate(run.manifest["classes"])}
    images: dict[int, list[CubImage]] = {}
    for image in cub.split(train=False):
        if image.folder in position:
            images.setdefault(position[image.folder], []).append(image)
    images = {c: members[:images_per_class] for c, members in images.items()}
    if not images:
        raise DataError(f"none of the run's classes is a CUB class folder of {root} (were they exported by cub.py?)")
    oriented = oriented_prototypes(run)
    prototypes = {
        "nmf": {c: run.nmf_prototypes[c] for c in images},
        "refined": {c: oriented[c] for c in images},
    }
    scores = protoeval_scores(backbone, _class_batches(backbone, images, crop, progress), prototypes, seed=seed)
    return {
        "scores": scores,
        "n_classes": len(images),
        "n_images": sum(len(v) for v in images.values()),
        "image_size": backbone.preprocessing.crop_size,
        "crop": crop,
        "part_names": cub.part_names,
    }
