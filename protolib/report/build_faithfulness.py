"""The report's sections on faithfulness and intervention: deletion / insertion of four saliency maps with
95 % intervals, the Table-4 oracle with prototype importance, and the mistakes with their culprits."""

from __future__ import annotations

import numpy as np
import torch

from ..backbones import Backbone
from ..evaluation.faithfulness import auc, deletion_insertion, grad_cam
from ..evaluation.intervention import oracle_intervention, prototype_importance
from ..evaluation.metrics import SplitFeatures, among_decomposed
from ..evaluation.mistakes import mistakes_json
from ..explain import heatmap_overlay, upsample
from ..method.head import PrototypeHead
from ..runs import Run
from .pictures import forward, png, spread

SALIENCY_MAPS = ("refined heatmap", "NMF part map", "Grad-CAM", "random")


def mean_normal_interval(values: list[float]) -> dict:
    """Mean and its 95 % interval (normal approximation, fine for the >= 100 images the report uses)."""
    v = np.asarray(values, dtype=float)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "low": float(v.mean() - half), "high": float(v.mean() + half)}


def faithfulness_section(run: Run, backbone: Backbone, sf: SplitFeatures, n_images: int, steps: int, images: dict) -> dict:
    """Deletion / insertion AUC, with 95 % intervals, of four saliency maps on the same held-out images: the
    heatmap of each image's most contributing refined prototype, that prototype's NMF part map, Grad-CAM,
    and a random map (the floor). Paired differences against Grad-CAM say whether a gap is real."""
    head = run.head(backbone)
    generator = torch.Generator().manual_seed(0)
    curves: dict[str, dict[str, list]] = {m: {"deletion": [], "insertion": []} for m in SALIENCY_MAPS}
    per_image = []
    for j, n in enumerate(spread(sf, n_images)):
        label = int(sf.labels[n])
        position = head.position(label)
        x, picture, feats, _ = forward(backbone, sf.paths[n])
        maps = head.heatmaps(feats.unsqueeze(0), position)[0]  # (k, h, w)
        top = int(maps.mean(dim=(1, 2)).argmax())  # its mean is its contribution
        saliency = {
            "refined heatmap": maps[top],
            "NMF part map": head.presence(feats.unsqueeze(0), position)[0, top],
            "Grad-CAM": grad_cam(backbone, feats.permute(2, 0, 1).unsqueeze(0).to(backbone.device), torch.tensor([label]))[0].cpu(),
            "random": torch.rand(maps.shape[1:], generator=generator),
        }
        result = deletion_insertion(backbone, x, label, saliency, steps)
        for m in SALIENCY_MAPS:
            curves[m]["deletion"].append(result[m].deletion)
            curves[m]["insertion"].append(result[m].insertion)
        per_image.append(
            {
                "image": sf.paths[n],
                "class": run.class_names[position],
                "prototype": top + 1,
                **{f"{m} {kind} AUC": auc(getattr(result[m], kind)) for m in SALIENCY_MAPS for kind in ("deletion", "insertion")},
            }
        )
        if j < 3:
            size = picture.shape[:2]
            images[f"faith{j}.image"] = png(picture)
            images[f"faith{j}.prototype"] = png(heatmap_overlay(upsample(maps[top], size), picture))
            images[f"faith{j}.gradcam"] = png(heatmap_overlay(upsample(saliency["Grad-CAM"], size), picture))
            per_image[-1]["key"] = f"faith{j}"
    summary = {}
    aucs = {m: {kind: [auc(c) for c in curves[m][kind]] for kind in ("deletion", "insertion")} for m in SALIENCY_MAPS}
    for m in SALIENCY_MAPS:
        summary[m] = {
            **{f"{kind}_auc": mean_normal_interval(aucs[m][kind]) for kind in ("deletion", "insertion")},
            **{f"{kind}_curve": torch.stack(curves[m][kind]).mean(dim=0).tolist() for kind in ("deletion", "insertion")},
        }
        if m != "Grad-CAM":
            summary[m]["minus_gradcam"] = {
                kind: mean_normal_interval(list(np.subtract(aucs[m][kind], aucs["Grad-CAM"][kind])))
                for kind in ("deletion", "insertion")
            }
    return {
        "available": True,
        "n_images": len(per_image),
        "steps": steps,
        "fractions": [t / steps for t in range(steps + 1)],
        "methods": summary,
        "per_image": per_image,
    }


def _intervention(head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    importance = prototype_importance(head, pooled, labels)
    return {
        "oracle": oracle_intervention(head, pooled, labels),
        "importance": {name: row.tolist() for name, row in zip(names, importance)},
    }


def intervention_section(run: Run, backbone: Backbone, sf: SplitFeatures) -> dict:
    """The Table-4 oracle and per-prototype importance, over the model's whole label space and
    restricted to the run's classes (there, a wrong prediction always goes to a decomposed class)."""
    head = run.head(backbone)
    restricted, pooled, local = among_decomposed(head, sf.pooled, sf.labels)
    return {
        "available": True,
        "all_classes": _intervention(head, sf.pooled, sf.labels, run.class_names),
        "run_classes": _intervention(restricted, pooled, local, run.class_names),
        "n_classes_all": int(head.weight.shape[0]),
        "n_classes_run": len(run.classes),
    }


def mistakes_section(run: Run, backbone: Backbone, sf: SplitFeatures, kept: int = 5) -> dict:
    """``protoscope mistakes``'s figures, kept small: the counts, both oracles, the split-half edit, the most
    harmful prototypes and the clearest culprits (``kept`` of each); the full list is the command's."""

    def small(f: dict) -> dict:
        return {**f, "culprits": f["culprits"][:kept], "harmful": f["harmful"][:kept]}

    figures = mistakes_json(run.head(backbone), sf.pooled, sf.labels, sf.paths, backbone.class_names, run.class_names)
    section = {"available": True, **small(figures)}
    if "run_classes" in figures:
        section["run_classes"] = small(figures["run_classes"])
    return section
