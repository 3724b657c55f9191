"""Evaluation of a run on a split: exactness, accuracy, the paper's Table-3 analogue, reconstruction
errors, held-out heatmap fidelity per refinement strategy, and intervention effects.

Everything after feature extraction works on cached features, so it costs no backbone time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..backbones import Backbone
from ..data import BadImage, DataError, NoMatchingClasses, class_folders
from ..data.features import CacheDir, Progress, SplitFeatures, split_features, stream_features
from ..method import feature_matrix
from ..method.head import PrototypeHead
from ..method.refine import STRATEGIES, approximation, heatmap_covariance, orientation, refine, residual
from ..runs import Run


def label_space_problem(run: Run, backbone: Backbone, data: str | Path, split: str) -> str | None:
    """Why the photos of ``data/split`` are not the run's, or None: none of their class folders maps to a class
    the run decomposed, in the model's label space (a probe's: its own class folders, never ImageNet's
    indices). Measured anyway they give a silently wrong answer (accuracy 0, a fidelity that means nothing)."""
    try:
        found, _ = class_folders(data, split, backbone.class_names, backbone.wnids)
    except NoMatchingClasses:
        found = []
    except DataError as exc:
        return str(exc)
    if not set(run.classes.tolist()) & {c.label for c in found}:
        names = ", ".join(run.class_names[:5]) + ("…" if len(run.class_names) > 5 else "")
        return (
            f"no class folder of {data} ({split}) is a class this run decomposed ({names}): these photos are not "
            "the run's; use the data folder it was made from"
        )
    return None


def training_matrices(run: Run, backbone: Backbone, cache_dir: CacheDir = None) -> list[torch.Tensor]:
    """The features the run factorised, per decomposed class: its manifest's training images, from the
    feature cache."""
    groups = [run.manifest["images"][entry["folder"]] for entry in run.manifest["classes"]]
    for paths in groups:
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise DataError(f"the run's training image {missing[0]} is gone ({len(missing)} of {len(paths)} missing)")
    matrices = []
    for feats in stream_features(backbone, groups, cache_dir=cache_dir):
        if isinstance(feats, BadImage):
            raise feats
        matrices.append(feature_matrix(feats.feats))
    return matrices


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Column-wise Pearson correlation of (n, k) matrices (float64 inside; 0 for a constant column)."""
    x, y = x.double(), y.double()
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    return ((x * y).sum(dim=0) / (x.norm(dim=0) * y.norm(dim=0)).clamp_min(1e-300)).float()


def oriented_prototypes(run: Run) -> torch.Tensor:
    """The refined prototypes (C, k, D), each turned by the sign of its alpha, so that its heatmap rises
    where the part raises the logit (for alpha > 0) or where the part *is* (for alpha < 0).

    Measures that read where a map peaks, as ProtoEval does, need a part's orientation; the head fixes
    it through alpha, the data plays no part in choosing it.
    """
    return run.refined_prototypes * orientation(run.alpha).unsqueeze(-1)


def signed_fidelity(
    nmf_prototypes: torch.Tensor, alpha: torch.Tensor, refined: torch.Tensor, matrices: list[torch.Tensor]
) -> torch.Tensor:
    """Pearson(F alpha_i p_i, F p~_i) = sign(alpha_i) Pearson(F p_i, F p~_i) per class and prototype, (C, k),
    on each class's features F (sign(0) counts as +1: the part's own orientation).

    Signed: a refined prototype whose heatmap anti-correlates with its scaled part has *flipped* (the
    page would say "more like this part, more likely the class" while the part lowers the logit).
    """
    return torch.stack([orientation(a) * pearson(F @ P.T, F @ R.T) for P, a, R, F in zip(nmf_prototypes, alpha, refined, matrices)])


def fidelity_summary(values: torch.Tensor, labels: list[int]) -> dict:
    """Mean, worst prototype, number of flips (signed fidelity < 0) and per-class means of (C, k) values."""
    return {
        "mean": float(values.mean()),
        "min": float(values.min()),
        "flips": int((values < 0).sum()),
        "per_class": {str(label): float(v.mean()) for label, v in zip(labels, values)},
    }


def strategy_fidelity(
    run: Run,
    heldout: dict[int, torch.Tensor],
    training: list[torch.Tensor] | None = None,
    strategies: tuple[str, ...] = STRATEGIES,
) -> dict[str, dict]:
    """Signed heatmap fidelity of every refinement strategy on held-out features ``heldout`` (label ->
    (n, D) features, unclamped: the features the logit uses).

    Strategies the run did not keep are refined here from its NMF prototypes and its ``training``
    features (:func:`training_matrices`); without them, only the run's own strategies are compared.
    """
    P, alpha = run.nmf_prototypes, run.alpha
    v = run.refined_by_strategy[run.strategy].sum(dim=1)  # the head rows, exactly (before any saved intervention)
    positions = [c for c, label in enumerate(run.classes.tolist()) if label in heldout]
    if not positions:
        return {}
    labels = [int(run.classes[c]) for c in positions]
    matrices = [heldout[label] for label in labels]
    covariance = heatmap_covariance(training, P, residual(P, alpha, v)) if training is not None else None
    result = {}
    for strategy in strategies:
        if strategy in run.refined_by_strategy:
            refined = run.refined_by_strategy[strategy]
        elif training is not None:
            refined = refine(strategy, P, alpha, v, training, covariance)
        else:
            continue
        values = signed_fidelity(P[positions], alpha[positions], refined[positions], matrices)
        result[strategy] = fidelity_summary(values, labels)
    return result


def replaced_rows_top1(head: PrototypeHead, rows: torch.Tensor, pooled: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 with the decomposed classes' head rows replaced by ``rows`` (C, D)."""
    weight = head.weight.clone()
    weight[head.classes] = rows
    return top1(pooled @ weight.T + head.bias, labels)


def among_decomposed(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor
) -> tuple[PrototypeHead, torch.Tensor, torch.Tensor]:
    """The run as a classifier of its decomposed classes only, as in the paper (which decomposes every
    class): the head's decomposed rows, and the images of those classes with labels renumbered to
    positions in ``head.classes`` (so an intervention (C, k) means the same on both heads)."""
    position = {label: i for i, label in enumerate(head.classes.tolist())}
    keep = torch.tensor([int(label) in position for label in labels], dtype=torch.bool)
    restricted = PrototypeHead(
        head.weight[head.classes],
        head.bias[head.classes],
        torch.arange(len(head.classes)),
        head.refined_prototypes,
        head.part_vectors,
        head.presence_damping,
    )
    local = torch.tensor([position[int(label)] for label in labels[keep]], dtype=torch.long)
    return restricted, pooled[keep], local


def table3(head: PrototypeHead, approx: torch.Tensor, pooled: torch.Tensor, labels: torch.Tensor) -> dict:
    """The paper's Table 3 for one k: top-1 with the decomposed rows replaced by the scaled prototypes
    only (``approx``, (C, D)), by the residual only, or kept whole, in two label spaces.

    - ``among_run_classes``: the run as a classifier of its decomposed classes (images of those classes).
      When every class of the model is decomposed (a probe decomposed whole), this is the paper's setting.
    - ``all_classes``: the model's own C-way head with only the run's rows replaced. Classes that were
      not decomposed keep their whole rows, so "residual only" says little about the method there.
    """
    restricted, pooled_r, labels_r = among_decomposed(head, pooled, labels)
    rows = head.weight[head.classes]

    def scores(h: PrototypeHead, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {
            "prototypes_only": replaced_rows_top1(h, approx, x, y),
            "residual_only": replaced_rows_top1(h, rows - approx, x, y),
            "both": replaced_rows_top1(h, rows, x, y),
        }

    return {
        "every_class_decomposed": len(head.classes) == len(head.weight),
        "among_run_classes": scores(restricted, pooled_r, labels_r),
        "all_classes": scores(head, pooled, labels),
    }


def evaluate_run(
    run: Run,
    backbone: Backbone,
    data: str | Path,
    split: str = "val",
    images_per_class: int | None = None,
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
    features: SplitFeatures | None = None,
    training: list[torch.Tensor] | None = None,
) -> dict:
    """The evaluation figures of a run on ``data/split`` (fractions in [0, 1]).

    ``training``: the run's training features (read from the feature cache when not given); they
    refine the strategies the run did not keep, so that every strategy's fidelity is compared.
    """
    head = run.head(backbone)
    sf = features or split_features(backbone, data, split, images_per_class, cache_dir=cache_dir, progress=progress)
    notes = []
    if training is None:
        try:
            training = training_matrices(run, backbone, cache_dir)
        except DataError as exc:
            notes.append(f"only the run's own strategies are compared: {exc}")
    logits, _ = head(sf.pooled)
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
        "table3": table3(head, approximation(run.nmf_prototypes, run.alpha), sf.pooled, sf.labels),
        "feature_reconstruction_error": float(run.feature_error.mean()),
        "head_reconstruction_error": float(run.head_error(head.weight).mean()),
        "signed_fidelity": strategy_fidelity(run, sf.matrices, training),
        "problems": [str(p) for p in sf.problems],
        "notes": notes,
    }
