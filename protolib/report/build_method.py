"""The report's sections on the method itself: Table 3 and Figure 5 against k, refinement fidelity with
example heatmaps, stability across NMF seeds, and ProtoEval where the data has keypoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment

from ..backbones import Backbone
from ..data.features import Progress
from ..evaluation.keypoints import csv_class_batches, keypoint_layout
from ..evaluation.metrics import SplitFeatures, oriented_prototypes, pearson, table3
from ..evaluation.part_scores import cub_protoeval, protoeval_scores
from ..explain import heatmap_overlay, upsample
from ..method.discovery import discover
from ..method.refine import MAX_K, approximation, head_error, scale_prototypes
from ..runs import Run
from .pictures import forward, png, spread
from .sections import not_computed
from .settings import ReportSettings


def table3_section(run: Run, backbone: Backbone, sf: SplitFeatures, matrices: list[torch.Tensor], ks: Sequence[int]) -> dict:
    """Top-1 with prototypes only / residual only / both (see ``metrics.table3``: among the run's classes,
    and in the model's whole label space), and the reconstruction errors, for each k."""
    head = run.head(backbone)
    v = backbone.head_weight.cpu()[run.classes].float()
    cap = min(MAX_K, min(e["n_images"] for e in run.manifest["classes"]))  # the pipeline's own rule: k <= images
    used = [k for k in ks if k <= cap]
    spaces = ("among_run_classes", "all_classes")
    rows: dict[str, dict[str, list[float]]] = {space: {"prototypes_only": [], "residual_only": [], "both": []} for space in spaces}
    errors: dict[str, list[float]] = {"feature_reconstruction_error": [], "head_reconstruction_error": []}
    for k in used:
        nmf = discover(
            run.discovery, matrices, k, v, random_state=run.params.get("random_state", 0), solver=run.params.get("solver", "hals")
        )
        alpha = scale_prototypes(nmf.prototypes, v)
        scores = table3(head, approximation(nmf.prototypes, alpha), sf.pooled, sf.labels)
        for space in spaces:
            for key, value in scores[space].items():
                rows[space][key].append(value)
        errors["feature_reconstruction_error"].append(float(nmf.relative_error.mean()))
        errors["head_reconstruction_error"].append(float(head_error(nmf.prototypes, alpha, v).mean()))
    skipped = [k for k in ks if k > cap]
    return {
        "available": True,
        "k": used,
        "every_class_decomposed": len(run.classes) == len(head.weight),
        "n_classes": len(run.classes),
        "n_model_classes": len(head.weight),
        **rows,
        **errors,
        "skipped_k": skipped,
        "note": f"k above {cap} skipped: a class has only {cap} training images" if skipped else "",
    }


def seed_stability_section(run: Run, matrices: list[torch.Tensor], seeds: int) -> dict:
    """NMF with other seeds on the same features (the run's discovery), matched to the run's prototypes
    (Hungarian on cosine)."""
    own = run.params.get("random_state", 0)
    head_rows = run.refined_by_strategy[run.strategy].sum(dim=1)  # the refined prototypes sum to the head rows exactly
    reference = torch.nn.functional.normalize(run.nmf_prototypes.float(), dim=-1)
    similarity = torch.zeros(len(run.classes), max(seeds - 1, 0))
    for s in range(1, seeds):
        other = discover(
            run.discovery, matrices, run.k, head_rows, random_state=own + s, solver=run.params.get("solver", "hals")
        ).prototypes
        cosine = reference @ torch.nn.functional.normalize(other.float(), dim=-1).transpose(1, 2)  # (C, k, k)
        for c in range(len(cosine)):
            rows, cols = linear_sum_assignment(cosine[c].numpy(), maximize=True)
            similarity[c, s - 1] = float(cosine[c][rows, cols].mean())
    per_class = similarity.mean(dim=1)
    return {
        "available": True,
        "seeds": [own + s for s in range(seeds)],
        "mean": float(per_class.mean()),
        "min": float(per_class.min()),
        "per_class": {name: float(v) for name, v in zip(run.class_names, per_class)},
    }


def protoeval_section(
    run: Run, backbone: Backbone, source: str | Path, settings: ReportSettings, progress: Progress | None
) -> dict:
    """ProtoEval scores where ``source`` has keypoints; otherwise a clear reason. The refined prototypes
    are turned by the sign of their alpha (see ``metrics.oriented_prototypes``)."""

    layout = keypoint_layout(source, settings.split)
    if layout is None:
        return not_computed(f"no keypoints in this data ({source}): ProtoEval needs a CUB-200-2011 folder or a keypoints.csv")
    kind, path = layout
    if kind == "cub":
        result = cub_protoeval(run, backbone, path, settings.protoeval_images_per_class, progress=progress)
        return {"available": True, "source": str(path), **result}
    batches = list(csv_class_batches(backbone, run, source, path, settings.split, settings.protoeval_images_per_class, progress))
    if not batches:
        return not_computed(f"{path} has no keypoints for the run's classes in {settings.split}/")
    oriented = oriented_prototypes(run)
    prototypes = {"nmf": {c: run.nmf_prototypes[c] for c, *_ in batches}, "refined": {c: oriented[c] for c, *_ in batches}}
    return {
        "available": True,
        "source": str(path),
        "scores": protoeval_scores(backbone, iter(batches), prototypes),
        "n_classes": len(batches),
        "n_images": sum(len(x) for _, x, *_ in batches),
        "image_size": backbone.preprocessing.crop_size,
    }


def refinement_section(run: Run, backbone: Backbone, sf: SplitFeatures, evaluation: dict, examples: int, images: dict) -> dict:
    """Signed held-out fidelity per strategy, and a few images' heatmaps before (the scaled NMF part
    alpha_i p_i) and after refinement (the run's p~_i), with their correlation on that image."""
    head = run.head(backbone)
    shown: list[dict] = []
    for n in spread(sf, examples):
        label = int(sf.labels[n])
        position = head.position(label)
        _, picture, feats, _ = forward(backbone, sf.paths[n])
        scaled = run.alpha[position].unsqueeze(-1) * run.nmf_prototypes[position]
        before = torch.einsum("hwd,kd->khw", feats, scaled)
        after = head.heatmaps(feats.unsqueeze(0), position)[0]
        size = picture.shape[:2]
        prefix = f"refine{len(shown)}"
        images[f"{prefix}.image"] = png(picture)
        for i in range(run.k):
            images[f"{prefix}.before{i}"] = png(heatmap_overlay(upsample(before[i], size), picture))
            images[f"{prefix}.after{i}"] = png(heatmap_overlay(upsample(after[i], size), picture))
        correlation = pearson(before.flatten(1).T, after.flatten(1).T).tolist()
        shown.append(
            {
                "image": sf.paths[n],
                "class": run.class_names[position],
                "key": prefix,
                "alpha": run.alpha[position].tolist(),
                "heatmap_correlation": correlation,
            }
        )
    names = {str(int(label)): name for label, name in zip(run.classes, run.class_names)}
    fidelity = evaluation["signed_fidelity"]
    return {
        "available": True,
        "strategy": run.strategy,
        "mean": {s: f["mean"] for s, f in fidelity.items()},
        "min": {s: f["min"] for s, f in fidelity.items()},
        "flips": {s: f["flips"] for s, f in fidelity.items()},
        "per_class": {s: {names[label]: v for label, v in f["per_class"].items()} for s, f in fidelity.items()},
        "examples": shown,
    }
