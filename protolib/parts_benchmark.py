"""The ground-truth parts benchmark: do the method's prototypes find the parts an object is made of?

A generated dataset (``synthetic.py``) knows where every part is. A small CNN (``toy_model.py``)
is trained on it, wrapped as a :class:`Backbone`, decomposed by the method, and its prototypes are
scored with the ProtoEval protocol (``parts_eval.py``) against the known keypoints, next to
baselines that use the *same* features: k-means centroids and PCA directions per class, whose
activation maps ``f . p`` are read exactly like the prototypes'. ``protoeval_scores`` is the
protocol for any backbone and any prototypes; the CUB evaluation (``cub.py``) uses it too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .backbones import Backbone, Preprocessing
from .metrics import oriented_prototypes, training_matrices
from .parts_eval import add_protoeval_noise, consistency_percent, part_marks, stability_percent
from .pipeline import run_decomposition
from .runs import Run, save_run
from .synthetic import class_names, make_parts_dataset, parts_of_class, read_image_folder, write_image_folder
from .toy_model import MEAN, STD, PartsNet, load_parts_net, save_parts_net, to_input, train_parts_net

BASELINES = ("kmeans", "pca")
Report = Callable[[str], None]


# -- the protocol for any backbone -------------------------------------------------------------
MAPS = ("heatmap", "coefficients")


def prototype_maps(spatial: torch.Tensor, prototypes: torch.Tensor, kind: str = "heatmap") -> torch.Tensor:
    """Where each of a class's prototypes (k, D) is, on spatial features (N, D, h, w) -> (N, k, h, w).

    ``heatmap``: ``f . p``, the method's heatmaps (whose means are the contributions). ``coefficients``:
    the least-squares coefficients of ``f`` on the k prototypes together, ``f . pinv(P)``, i.e. how much
    of each prototype the feature holds *given the others*. Prototypes that share a large common
    component (NMF's are non-negative, so they always do) have heatmaps that light up on each other's
    parts; the coefficients separate them. For orthonormal prototypes (PCA) both are the same.
    """
    P = prototypes.to(spatial.device).float()
    if kind == "coefficients":
        return torch.einsum("ndhw,dk->nkhw", spatial.float(), torch.linalg.pinv(P))
    if kind != "heatmap":
        raise ValueError(f"unknown map {kind!r}; choose one of {', '.join(MAPS)}")
    return torch.einsum("ndhw,kd->nkhw", spatial.float(), P)


@torch.inference_mode()
def _spatial(backbone: Backbone, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = [backbone.spatial_features(x[i : i + batch_size].to(backbone.device)).float().cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def protoeval_scores(
    backbone: Backbone,
    classes: Iterable[tuple[object, torch.Tensor, np.ndarray, np.ndarray]],
    prototypes: dict[str, dict[object, torch.Tensor]],
    maps: tuple[str, ...] = MAPS,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, dict[str, dict[str, float]]]:
    """ProtoEval consistency and stability (%) of several sets of prototypes on the same images:
    ``result[method][map] = {"consistency": .., "stability": ..}`` (maps: see :func:`prototype_maps`).

    ``classes`` yields, per class, (key, normalised images (N, 3, S, S), keypoints (N, P, 2) in
    pixel-centre coordinates of the S x S image, visible (N, P)); ``prototypes[method][key]`` is
    that class's (k, D). Each image gets one noisy copy (seeded), shared by all methods, so the
    methods are compared on identical inputs.
    """
    generator = torch.Generator().manual_seed(seed)
    clean = {(m, kind): [] for m in prototypes for kind in maps}
    noisy = {(m, kind): [] for m in prototypes for kind in maps}
    visibles = []
    for key, x, keypoints, visible in classes:
        size = x.shape[-1]
        features = _spatial(backbone, x, batch_size)
        features_noisy = _spatial(backbone, add_protoeval_noise(x, generator=generator), batch_size)
        visibles.append(visible)
        for (method, kind), marks in clean.items():
            p = prototypes[method][key]
            marks.append(part_marks(prototype_maps(features, p, kind), keypoints, visible, size))
            noisy[method, kind].append(part_marks(prototype_maps(features_noisy, p, kind), keypoints, visible, size))
    if not visibles:
        raise ValueError("no images to evaluate")
    scores: dict[str, dict[str, dict[str, float]]] = {m: {} for m in prototypes}
    for (method, kind), marks in clean.items():
        scores[method][kind] = {
            "consistency": consistency_percent(marks, visibles),
            "stability": stability_percent(marks, noisy[method, kind]),
        }
    return scores


# -- baselines: other prototypes from the same features ----------------------------------------
def kmeans_prototypes(A: torch.Tensor, k: int, seed: int = 0, iterations: int = 50) -> torch.Tensor:
    """k-means centroids of the rows of A (k-means++ start, Lloyd iterations), (k, D)."""
    generator = torch.Generator().manual_seed(seed)
    A = A.float()
    centres = A[torch.randint(len(A), (1,), generator=generator)]
    for _ in range(1, k):
        d2 = torch.cdist(A, centres).pow(2).min(dim=1).values
        centres = torch.cat([centres, A[torch.multinomial(d2 / d2.sum(), 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(A, centres).argmin(dim=1)
        moved = torch.stack([A[assign == j].mean(dim=0) if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(moved, centres):
            break
        centres = moved
    return centres


def pca_prototypes(A: torch.Tensor, k: int) -> torch.Tensor:
    """The first k principal directions of A's rows, each signed so that its mean projection is positive."""
    A = A.float()
    _, _, Vh = torch.linalg.svd(A - A.mean(dim=0), full_matrices=False)
    directions = Vh[:k]
    signs = torch.sign(A.mean(dim=0) @ directions.T)
    return directions * torch.where(signs == 0, 1.0, signs).unsqueeze(-1)


# -- the synthetic benchmark -------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the benchmark; ``k=None`` gives each class as many prototypes as it has parts.

    All 6 classes: every shape and every colour then recurs across classes, so the model must tell
    parts apart by their combination, and 22 prototypes make a finer score than 15. Two epochs
    already give 99-100% val accuracy; longer training collapses each class's features onto a few
    directions, and the parts of a class then become indistinguishable to *any* prototype (measured:
    at 5 epochs the consistency of every method fell to 30-45%).
    """

    num_classes: int = 6
    size: int = 112
    train_per_class: int = 150
    val_per_class: int = 50
    test_per_class: int = 50
    decompose_per_class: int = 60
    epochs: int = 2
    k: int | None = None
    seed: int = 0


class PartsNetBackbone(Backbone):
    """PartsNet as a backbone: spatial = ``forward_features``, head = its Linear, its own normalisation."""

    def __init__(self, model: PartsNet, size: int):
        preprocessing = Preprocessing(crop_size=size, resize_size=size, mean=MEAN, std=STD)
        names = class_names(model.num_classes)  # also the folder names, which map by name
        super().__init__("parts_net", model, preprocessing, names, wnids=names)

    @property
    def head(self) -> torch.nn.Linear:
        return self.model.head

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(spatial)


def _dataset_spec(cfg: BenchConfig) -> dict:
    return {"num_classes": cfg.num_classes, "size": cfg.size, "seed": cfg.seed,
            "train": cfg.train_per_class, "val": cfg.val_per_class, "test": cfg.test_per_class}


def prepare_data(out: Path, cfg: BenchConfig) -> Path:
    """Generate train/val/test image folders (with keypoints.csv) under ``out/data``, reused when unchanged."""
    root, spec_file = out / "data", out / "data" / "dataset.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) == _dataset_spec(cfg):
        return root
    for offset, (split, n) in enumerate((("train", cfg.train_per_class), ("val", cfg.val_per_class),
                                          ("test", cfg.test_per_class))):
        samples = make_parts_dataset(n, seed=cfg.seed + offset, size=cfg.size, num_classes=cfg.num_classes)
        write_image_folder(samples, root, split)
    with atomic_path(spec_file) as tmp:
        tmp.write_text(json.dumps(_dataset_spec(cfg)))
    return root


def prepare_model(out: Path, data: Path, cfg: BenchConfig, report: Report) -> tuple[PartsNet, dict]:
    """Train PartsNet on CPU (or reuse ``out/parts_net.safetensors`` when it was trained on this data)."""
    path, spec = out / "parts_net.safetensors", {"data": _dataset_spec(cfg), "epochs": cfg.epochs}
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        if meta.get("benchmark") == spec:
            return load_parts_net(path), {"val_accuracy": meta["val_accuracy"], "train_seconds": 0.0, "reused": True}
    started = time.perf_counter()
    report(f"training PartsNet ({cfg.epochs} epochs, {cfg.train_per_class} images per class, CPU)")
    model, val_accuracy = train_parts_net(read_image_folder(data, "train"), read_image_folder(data, "val"),
                                          epochs=cfg.epochs, seed=cfg.seed)
    seconds = round(time.perf_counter() - started, 2)
    save_parts_net(model, path, {"benchmark": spec, "val_accuracy": val_accuracy})
    return model, {"val_accuracy": val_accuracy, "train_seconds": seconds, "reused": False}


def _decompose(backbone: Backbone, data: Path, cfg: BenchConfig, cache: Path) -> list[Run]:
    """One run per distinct k (k=None: each class as many prototypes as it has parts)."""
    names = class_names(cfg.num_classes)
    groups: dict[int, list[str]] = {}
    for label, name in enumerate(names):
        groups.setdefault(cfg.k or len(parts_of_class(label)), []).append(name)
    return [
        run_decomposition(backbone, data, "train", classes, cfg.decompose_per_class, k=k, seed=cfg.seed,
                          cache_dir=cache)
        for k, classes in sorted(groups.items())
    ]


def _method_prototypes(backbone: Backbone, runs: list[Run], cache: Path, seed: int) -> dict[str, dict]:
    """Per method, per class label, the (k, D) prototypes whose activation maps are scored."""
    methods: dict[str, dict] = {"nmf": {}, "refined": {}, **{b: {} for b in BASELINES}}
    for run in runs:
        matrices = training_matrices(run, backbone, cache)
        oriented = oriented_prototypes(run, matrices)
        for c, label in enumerate(run.classes.tolist()):
            methods["nmf"][label] = run.nmf_prototypes[c]
            methods["refined"][label] = oriented[c]
            methods["kmeans"][label] = kmeans_prototypes(matrices[c], run.k, seed)
            methods["pca"][label] = pca_prototypes(matrices[c], run.k)
    return methods


def _test_classes(data: Path, num_classes: int):
    samples = read_image_folder(data, "test")
    for label in range(num_classes):
        mine = [s for s in samples if s.label == label]
        yield (label, to_input([s.image for s in mine]), np.stack([s.keypoints for s in mine]),
               np.stack([s.visible for s in mine]))


def run_parts_benchmark(out: str | Path, cfg: BenchConfig | None = None, report: Report | None = None) -> dict:
    """Generate, train, decompose, score; writes ``out/results.json`` and the runs, returns the results.

    ``results["scores"][method]`` holds ``consistency`` and ``stability`` in %, for the NMF
    prototypes, the refined prototypes (the run's head, turned towards their parts) and the baselines.
    """
    cfg, out, report = cfg or BenchConfig(), Path(out), report or (lambda message: None)
    started = time.perf_counter()
    data = prepare_data(out, cfg)
    model, training = prepare_model(out, data, cfg, report)
    backbone, cache = PartsNetBackbone(model, cfg.size), out / "features"
    report("decomposing")
    t = time.perf_counter()
    runs = _decompose(backbone, data, cfg, cache)
    decompose_seconds = round(time.perf_counter() - t, 2)
    for run in runs:
        save_run(run, out / f"run-k{run.k}", overwrite=True)
    report("scoring prototypes against the ground-truth parts")
    t = time.perf_counter()
    scores = protoeval_scores(backbone, _test_classes(data, cfg.num_classes),
                              _method_prototypes(backbone, runs, cache, cfg.seed), seed=cfg.seed)
    results = {
        "config": asdict(cfg),
        "model": {**training, "fingerprint": backbone.fingerprint},
        "scores": scores,
        "baseline": "kmeans",
        "seconds": {"decompose": decompose_seconds, "protoeval": round(time.perf_counter() - t, 2),
                    "total": round(time.perf_counter() - started, 2)},
    }
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results


def run_parts_benchmark_seeds(
    out: str | Path, cfg: BenchConfig | None = None, seeds: Iterable[int] = (0, 1, 2), report: Report | None = None
) -> dict:
    """The benchmark on several seeds, each with its own data and model (``out/seed-<s>``), since one
    trained model's figures move by several points; writes ``out/results.json``.

    ``results["scores"]`` has the shape of one seed's scores and holds the means; ``min`` and ``max``
    the range over the seeds, ``per_seed`` each seed's scores.
    """
    cfg, out, report = cfg or BenchConfig(), Path(out), report or (lambda message: None)
    per_seed = {}
    for seed in seeds:
        report(f"seed {seed}")
        per_seed[seed] = run_parts_benchmark(out / f"seed-{seed}", replace(cfg, seed=seed), report)

    def over_seeds(reduce) -> dict:
        first = next(iter(per_seed.values()))["scores"]
        return {
            method: {
                kind: {name: reduce([r["scores"][method][kind][name] for r in per_seed.values()]) for name in figures}
                for kind, figures in per_map.items()
            }
            for method, per_map in first.items()
        }

    results = {
        "config": {**asdict(cfg), "seed": None},
        "seeds": list(per_seed),
        "scores": over_seeds(lambda values: float(np.mean(values))),
        "min": over_seeds(min),
        "max": over_seeds(max),
        "per_seed": {str(seed): {"model": r["model"], "scores": r["scores"]} for seed, r in per_seed.items()},
    }
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results
