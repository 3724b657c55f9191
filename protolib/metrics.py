"""Evaluation of a run on a split: exactness, accuracy, the paper's Table-3 analogue, reconstruction
errors, held-out heatmap fidelity per refinement strategy, and intervention effects.

Everything after feature extraction works on cached features, so it costs no backbone time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .backbones import Backbone
from .data import DataError, Problem, scan_split
from .features import Progress, extract_features
from .head import PrototypeHead
from .pipeline import feature_matrix
from .runs import Run


@dataclass
class SplitFeatures:
    """Backbone outputs of every image of a split, grouped by class (kept for fidelity)."""

    paths: list[str]
    labels: torch.Tensor  # (N,)
    pooled: torch.Tensor  # (N, D)
    logits: torch.Tensor  # (N, C) the model's own
    matrices: dict[int, torch.Tensor]  # label -> A (n*H*W, D) of that class's images
    problems: list[Problem]


def split_features(
    backbone: Backbone,
    data: str | Path,
    split: str = "val",
    images_per_class: int | None = None,
    classes: list[str] | None = None,
    cache_dir=None,
    progress: Progress | None = None,
) -> SplitFeatures:
    images = scan_split(data, split, backbone.labels, backbone.wnids, classes, images_per_class)
    total, seen = len(images), 0
    paths, labels, pooled, logits, matrices, problems = [], [], [], [], {}, list(images.problems)
    for cls in images.classes:
        feats = extract_features(
            backbone,
            images.images[cls.folder],
            cache_dir=cache_dir,
            progress=(lambda _s, done, _t, base=seen: progress("features", base + done, total)) if progress else None,
        )
        seen += len(images.images[cls.folder])
        paths += feats.paths
        labels += [cls.label] * len(feats.paths)
        pooled.append(feats.pooled)
        logits.append(feats.logits)
        matrices[cls.label] = feature_matrix(feats.feats)
        problems += feats.problems
    return SplitFeatures(paths, torch.tensor(labels), torch.cat(pooled), torch.cat(logits), matrices, problems)


def training_matrices(run: Run, backbone: Backbone, cache_dir=None) -> list[torch.Tensor]:
    """The features the run factorised, per decomposed class: its manifest's training images, from the
    feature cache."""
    matrices = []
    for entry in run.manifest["classes"]:
        paths = run.manifest["images"][entry["folder"]]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise DataError(f"the run's training image {missing[0]} is gone ({len(missing)} of {len(paths)} missing)")
        matrices.append(feature_matrix(extract_features(backbone, paths, cache_dir=cache_dir).feats))
    return matrices


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Column-wise Pearson correlation of (n, k) matrices."""
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    return (x * y).sum(dim=0) / (x.norm(dim=0) * y.norm(dim=0)).clamp_min(1e-30)


def oriented_prototypes(run: Run, matrices: list[torch.Tensor]) -> torch.Tensor:
    """The refined prototypes (C, k, D), each turned so that its heatmap rises where its NMF part is.

    Refinement may flip a prototype's sign (its heatmap is then lowest on its part, with |Pearson|
    near 1); measures that read where a map peaks, as ProtoEval does, need the part's orientation.
    The sign is that of the correlation of the two heatmaps on each class's features ``matrices``
    (e.g. :func:`training_matrices`). Not the sign of alpha: a small positive alpha can come out flipped.
    """
    refined = run.prototypes
    signs = [
        torch.where(pearson(A @ run.nmf_prototypes[c].T, A @ refined[c].T) < 0, -1.0, 1.0) for c, A in enumerate(matrices)
    ]
    return refined * torch.stack(signs).unsqueeze(-1)


def heatmap_fidelity(run: Run, matrices: dict[int, torch.Tensor]) -> dict[str, dict]:
    """|Pearson(A p_i, A p~_i)| per strategy on the given (held-out) features: mean over classes
    and prototypes, the worst prototype, and the per-class means."""
    result = {}
    for strategy, refined in run.refined.items():
        per_class = {}
        for c, label in enumerate(run.classes.tolist()):
            if label in matrices:
                A = matrices[label]
                per_class[label] = pearson(A @ run.nmf_prototypes[c].T, A @ refined[c].T).abs()
        if per_class:
            values = torch.stack(list(per_class.values()))
            result[strategy] = {
                "mean": float(values.mean()),
                "min": float(values.min()),
                "per_class": {str(label): float(v.mean()) for label, v in per_class.items()},
            }
    return result


def replaced_rows_top1(head: PrototypeHead, rows: torch.Tensor, pooled: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 with the decomposed classes' head rows replaced by ``rows`` (C, D)."""
    weight = head.weight.clone()
    weight[head.classes] = rows
    return top1(pooled @ weight.T + head.bias, labels)


def evaluate_run(
    run: Run,
    backbone: Backbone,
    data: str | Path,
    split: str = "val",
    images_per_class: int | None = None,
    cache_dir=None,
    progress: Progress | None = None,
    features: SplitFeatures | None = None,
) -> dict:
    """The evaluation figures of a run on ``data/split`` (fractions in [0, 1])."""
    head = run.head(backbone)
    sf = features or split_features(backbone, data, split, images_per_class, cache_dir=cache_dir, progress=progress)
    logits, _ = head(sf.pooled)
    approx = (run.alpha.unsqueeze(-1) * run.nmf_prototypes).sum(dim=1)
    fidelity = heatmap_fidelity(run, sf.matrices)
    return {
        "backbone": run.manifest["backbone"],
        "note": run.manifest.get("note", ""),
        "k": run.k,
        "strategy": run.strategy,
        "split": split,
        "n_images": len(sf.paths),
        "n_classes_decomposed": len(run.classes),
        "top1_original": top1(sf.logits, sf.labels),
        "top1_prototype": top1(logits, sf.labels),
        "max_abs_logit_diff": float((logits - sf.logits).abs().max()),
        "prototypes_only_top1": replaced_rows_top1(head, approx, sf.pooled, sf.labels),
        "residual_only_top1": replaced_rows_top1(head, head.weight[head.classes] - approx, sf.pooled, sf.labels),
        "feature_reconstruction_error": float(run.feature_error.mean()),
        "head_reconstruction_error": float(run.head_error(head.weight).mean()),
        "heatmap_fidelity": {name: v["mean"] for name, v in fidelity.items()},
        "heatmap_fidelity_min": {name: v["min"] for name, v in fidelity.items()},
        "heatmap_fidelity_per_class": {name: v["per_class"] for name, v in fidelity.items()},
        "problems": [str(p) for p in sf.problems],
    }


def intervention_effect(
    head: PrototypeHead,
    pooled: torch.Tensor,
    labels: torch.Tensor,
    scale: torch.Tensor,
    contributions: torch.Tensor | None = None,
    before: torch.Tensor | None = None,
) -> dict:
    """Accuracy before and after scaling contributions by ``scale`` (C, k), and per class the
    change in accuracy (only classes whose accuracy moved are listed). Callers that try many edits
    pass the split's ``contributions`` and unedited predictions ``before`` once: 8x faster."""
    contributions = head.contributions(pooled) if contributions is None else contributions
    before = head.logits(pooled, contributions).argmax(dim=1) if before is None else before
    after = head.logits(pooled, contributions, scale).argmax(dim=1)
    changed = {}
    for label in labels.unique().tolist():
        rows = labels == label
        delta = float((after[rows] == label).float().mean() - (before[rows] == label).float().mean())
        if delta != 0:
            changed[label] = delta
    return {
        "top1_before": float((before == labels).float().mean()),
        "top1_after": float((after == labels).float().mean()),
        "predictions_changed": int((before != after).sum()),
        "per_class_change": changed,
    }


def among_decomposed(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor
) -> tuple[PrototypeHead, torch.Tensor, torch.Tensor]:
    """The run as a classifier of its decomposed classes only, as in the paper (which decomposes every
    class): the head's decomposed rows, and the images of those classes with labels renumbered to
    positions in ``head.classes`` (so an intervention (C, k) means the same on both heads)."""
    position = {label: i for i, label in enumerate(head.classes.tolist())}
    keep = torch.tensor([int(label) in position for label in labels], dtype=torch.bool)
    restricted = PrototypeHead(
        head.weight[head.classes], head.bias[head.classes], torch.arange(len(head.classes)), head.prototypes, head.parts
    )
    local = torch.tensor([position[int(label)] for label in labels[keep]], dtype=torch.long)
    return restricted, pooled[keep], local


def oracle_intervention(head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor) -> dict:
    """The paper's Table-4 oracle: in every wrong prediction whose predicted class was decomposed,
    zero that class's most important prototype (largest contribution) for that image only."""
    contributions = head.contributions(pooled)
    logits = head.logits(pooled, contributions)
    predicted = logits.argmax(dim=1)
    position = {label: i for i, label in enumerate(head.classes.tolist())}
    scale = torch.ones_like(contributions)
    fixed_images = 0
    for n in (predicted != labels).nonzero().flatten().tolist():
        c = position.get(int(predicted[n]))
        if c is not None:
            scale[n, c, contributions[n, c].argmax()] = 0
            fixed_images += 1
    after = head.logits(pooled, contributions, scale).argmax(dim=1)
    return {
        "top1_before": float((predicted == labels).float().mean()),
        "top1_after": float((after == labels).float().mean()),
        "intervened_images": fixed_images,
    }


def prototype_importance(head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, k) accuracy drop when each prototype alone is zeroed on the whole split."""
    contributions = head.contributions(pooled)
    base = top1(head.logits(pooled, contributions), labels)
    drops = torch.zeros(head.prototypes.shape[:2])
    for c in range(drops.shape[0]):
        for i in range(drops.shape[1]):
            scale = torch.ones(drops.shape)
            scale[c, i] = 0
            drops[c, i] = base - top1(head.logits(pooled, contributions, scale), labels)
    return drops
