"""One evaluation report of a run: every figure of the paper's evaluation, faithfulness and
intervention, gathered into one JSON-able dict (rendered to HTML by ``report_html``).

Sections, in order: exactness, Table 3 / Figure 5 against k, refinement fidelity (with example
heatmaps), stability across NMF seeds, ProtoEval consistency and stability (where keypoints exist),
explainability axioms, deletion / insertion against Grad-CAM, and intervention. The backbone runs
once per image: held-out and training features come from the disk cache, and only the few images of
the heatmap examples and of the deletion / insertion curves are passed through it again.
"""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

from .atomic import atomic_path
from .backbones import Backbone
from .data import BadImage, DataError
from .decompose import MAX_K, residual, scale_prototypes
from .explain import heatmap_overlay, model_input, upsample
from .faithfulness import auc, check_axioms, deletion_insertion, grad_cam
from .features import Progress
from .head import PrototypeHead
from .keypoints import csv_class_batches, keypoint_layout
from .metrics import (
    SplitFeatures,
    among_decomposed,
    evaluate_run,
    oracle_intervention,
    oriented_prototypes,
    pearson,
    prototype_importance,
    replaced_rows_top1,
    split_features,
    training_matrices,
)
from .nmf import batched_nmf
from .runs import Run

SECTIONS = {
    "exactness": "Exactness",
    "table3": "Prototypes and residual against k (Table 3, Figure 5)",
    "refinement": "Refinement keeps the heatmaps",
    "seed_stability": "Stability across NMF seeds",
    "protoeval": "Part consistency and stability (ProtoEval)",
    "axioms": "Explainability axioms",
    "deletion_insertion": "Deletion and insertion against Grad-CAM",
    "intervention": "Intervention",
}
TABLE3_KS = (1, 3, 5, 10)


@dataclass(frozen=True)
class ReportSettings:
    """How much work the report does; the defaults build a 10-class report in a few CPU minutes."""

    split: str = "val"
    images_per_class: int | None = None  # held-out images per class (None: all)
    ks: tuple[int, ...] = TABLE3_KS
    seeds: int = 3  # NMF seeds compared (the run's own and seeds - 1 more)
    examples: int = 3  # images whose heatmaps are shown before and after refinement
    faithfulness_images: int = 8  # images of the deletion / insertion curves
    steps: int = 8  # points of each deletion / insertion curve, after the first
    protoeval_images_per_class: int | None = None
    keypoints: str | None = None  # a CUB root or a folder with keypoints.csv (default: the data folder)

    def __post_init__(self):
        if self.seeds < 2:
            raise ValueError(f"seeds={self.seeds}: stability needs at least 2 NMF seeds to compare")
        if self.steps < 1 or self.faithfulness_images < 1:
            raise ValueError("deletion/insertion needs at least 1 image and 1 step")
        if not self.ks or any(not 1 <= k <= MAX_K for k in self.ks):
            raise ValueError(f"k values {self.ks} must lie in 1..{MAX_K}")


@dataclass
class Report:
    figures: dict  # what report.json holds: numbers and text only
    images: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG, shown in the HTML only


def png(image: np.ndarray, size: int = 128) -> str:
    """An RGB uint8 image as base64 PNG, downsized for the page."""
    buffer = io.BytesIO()
    Image.fromarray(image).resize((size, size), Image.BILINEAR).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


# -- sections --------------------------------------------------------------------------------------
def table3_section(run: Run, backbone: Backbone, sf: SplitFeatures, matrices: list[torch.Tensor], ks) -> dict:
    """Top-1 with prototypes only / residual only / both, and the reconstruction errors, for each k."""
    head = run.head(backbone)
    v = backbone.head_weight.cpu()[run.classes].float()
    cap = min(MAX_K, min(e["n_images"] for e in run.manifest["classes"]))  # the pipeline's own rule: k <= images
    used = [k for k in ks if k <= cap]
    rows = {key: [] for key in ("prototypes_only_top1", "residual_only_top1", "both_top1",
                                "feature_reconstruction_error", "head_reconstruction_error")}
    both = replaced_rows_top1(head, v, sf.pooled, sf.labels)  # the whole head row: the same for every k
    for k in used:
        nmf = batched_nmf(matrices, k, seed=run.manifest.get("seed", 0), solver=run.manifest.get("solver", "hals"))
        alpha = scale_prototypes(nmf.prototypes, v)
        approx = (alpha.unsqueeze(-1) * nmf.prototypes).sum(dim=1)
        rows["prototypes_only_top1"].append(replaced_rows_top1(head, approx, sf.pooled, sf.labels))
        rows["residual_only_top1"].append(replaced_rows_top1(head, residual(nmf.prototypes, alpha, v), sf.pooled, sf.labels))
        rows["both_top1"].append(both)
        rows["feature_reconstruction_error"].append(float(nmf.relative_error.mean()))
        rows["head_reconstruction_error"].append(float(((v - approx).norm(dim=1) / v.norm(dim=1)).mean()))
    skipped = [k for k in ks if k > cap]
    return {"available": True, "k": used, **rows, "skipped_k": skipped,
            "note": f"k above {cap} skipped: a class has only {cap} training images" if skipped else ""}


def seed_stability_section(run: Run, matrices: list[torch.Tensor], seeds: int) -> dict:
    """NMF with other seeds on the same features, matched to the run's prototypes (Hungarian on cosine)."""
    own = run.manifest.get("seed", 0)
    reference = torch.nn.functional.normalize(run.nmf_prototypes.float(), dim=-1)
    similarity = torch.zeros(len(run.classes), max(seeds - 1, 0))
    for s in range(1, seeds):
        other = batched_nmf(matrices, run.k, seed=own + s, solver=run.manifest.get("solver", "hals")).prototypes
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
    run: Run, backbone: Backbone, source: str | Path, settings: ReportSettings, matrices: list[torch.Tensor], progress
) -> dict:
    """ProtoEval scores where ``source`` has keypoints; otherwise a clear reason. ``matrices``: the run's
    training features, which orient the refined prototypes (see ``metrics.oriented_prototypes``)."""
    from .cub import cub_protoeval
    from .parts_benchmark import protoeval_scores

    layout = keypoint_layout(source, settings.split)
    if layout is None:
        return _unavailable(f"no keypoints in this data ({source}): ProtoEval needs a CUB-200-2011 folder or a keypoints.csv")
    kind, path = layout
    if kind == "cub":
        result = cub_protoeval(run, backbone, path, settings.protoeval_images_per_class, progress=progress, matrices=matrices)
        return {"available": True, "source": str(path), **result}
    batches = list(csv_class_batches(backbone, run, source, path, settings.split, settings.protoeval_images_per_class, progress))
    if not batches:
        return _unavailable(f"{path} has no keypoints for the run's classes in {settings.split}/")
    oriented = oriented_prototypes(run, matrices)
    prototypes = {"nmf": {c: run.nmf_prototypes[c] for c, *_ in batches}, "refined": {c: oriented[c] for c, *_ in batches}}
    return {"available": True, "source": str(path), "scores": protoeval_scores(backbone, iter(batches), prototypes),
            "n_classes": len(batches), "n_images": sum(len(x) for _, x, *_ in batches),
            "image_size": backbone.preprocessing.crop_size}


def _spread(sf: SplitFeatures, n: int) -> list[int]:
    """Indices of n held-out images taken round-robin over the classes (so every class is seen)."""
    by_class = [(sf.labels == label).nonzero().flatten().tolist() for label in sf.labels.unique().tolist()]
    picked, rank = [], 0
    while len(picked) < n and any(rank < len(members) for members in by_class):
        picked += [members[rank] for members in by_class if rank < len(members)]
        rank += 1
    return picked[:n]


def _forward(backbone: Backbone, path: str):
    x, shown = model_input(backbone, path)
    feats, logits = backbone(x.to(backbone.device))
    return x, shown, feats[0].float().cpu(), logits[0].float().cpu()


def refinement_section(run: Run, backbone: Backbone, sf: SplitFeatures, evaluation: dict, examples: int, images: dict) -> dict:
    """Held-out fidelity per strategy, and a few images' heatmaps before (NMF) and after (refined) refinement."""
    head = run.head(backbone)
    shown = []
    for n in _spread(sf, examples):
        label = int(sf.labels[n])
        position = head.position(label)
        _, picture, feats, _ = _forward(backbone, sf.paths[n])
        before = torch.einsum("hwd,kd->khw", feats, run.nmf_prototypes[position])
        after = head.heatmaps(feats.unsqueeze(0), position)[0]
        size = picture.shape[:2]
        prefix = f"refine{len(shown)}"
        images[f"{prefix}.image"] = png(picture)
        for i in range(run.k):
            images[f"{prefix}.before{i}"] = png(heatmap_overlay(upsample(before[i], size), picture))
            images[f"{prefix}.after{i}"] = png(heatmap_overlay(upsample(after[i], size), picture))
        correlation = pearson(before.flatten(1).T, after.flatten(1).T).tolist()
        shown.append({"image": sf.paths[n], "class": run.class_names[position], "key": prefix,
                      "alpha": run.alpha[position].tolist(), "heatmap_correlation": correlation})
    return {
        "available": True,
        "strategy": run.strategy,
        "mean": evaluation["heatmap_fidelity"],
        "min": evaluation["heatmap_fidelity_min"],
        "per_class": {s: {run.class_names[run.classes.tolist().index(int(label))]: v for label, v in per.items()}
                      for s, per in evaluation["heatmap_fidelity_per_class"].items()},
        "examples": shown,
    }


def faithfulness_section(run: Run, backbone: Backbone, sf: SplitFeatures, n_images: int, steps: int, images: dict) -> dict:
    """Deletion / insertion AUC of each image's most contributing prototype heatmap and of Grad-CAM."""
    head = run.head(backbone)
    methods = ("top prototype", "Grad-CAM")
    curves = {m: {"deletion": [], "insertion": []} for m in methods}
    per_image = []
    for j, n in enumerate(_spread(sf, n_images)):
        label = int(sf.labels[n])
        position = head.position(label)
        x, picture, feats, _ = _forward(backbone, sf.paths[n])
        maps = head.heatmaps(feats.unsqueeze(0), position)[0]  # (k, h, w)
        top = int(maps.mean(dim=(1, 2)).argmax())  # its mean is its contribution
        cam = grad_cam(backbone, feats.permute(2, 0, 1).unsqueeze(0).to(backbone.device), torch.tensor([label]))[0].cpu()
        result = deletion_insertion(backbone, x, label, {"top prototype": maps[top], "Grad-CAM": cam}, steps)
        for m in methods:
            curves[m]["deletion"].append(result[m].deletion)
            curves[m]["insertion"].append(result[m].insertion)
        per_image.append({"image": sf.paths[n], "class": run.class_names[position], "prototype": top + 1,
                          **{f"{m} {kind} AUC": auc(getattr(result[m], kind)) for m in methods
                             for kind in ("deletion", "insertion")}})
        if j < 3:
            size = picture.shape[:2]
            images[f"faith{j}.image"] = png(picture)
            images[f"faith{j}.prototype"] = png(heatmap_overlay(upsample(maps[top], size), picture))
            images[f"faith{j}.gradcam"] = png(heatmap_overlay(upsample(cam, size), picture))
            per_image[-1]["key"] = f"faith{j}"
    summary = {}
    for m in methods:
        deletion, insertion = torch.stack(curves[m]["deletion"]), torch.stack(curves[m]["insertion"])
        summary[m] = {
            "deletion_auc": float(np.mean([auc(c) for c in deletion])),
            "insertion_auc": float(np.mean([auc(c) for c in insertion])),
            "deletion_curve": deletion.mean(dim=0).tolist(),
            "insertion_curve": insertion.mean(dim=0).tolist(),
        }
    return {"available": True, "n_images": len(per_image), "steps": steps,
            "fractions": [t / steps for t in range(steps + 1)], "methods": summary, "per_image": per_image}


def _intervention(head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, names: list[str]) -> dict:
    importance = prototype_importance(head, pooled, labels)
    return {"oracle": oracle_intervention(head, pooled, labels),
            "importance": {name: row.tolist() for name, row in zip(names, importance)}}


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


# -- the whole report --------------------------------------------------------------------------------
def build_report(
    run: Run,
    backbone: Backbone,
    data: str | Path,
    settings: ReportSettings | None = None,
    cache_dir=None,
    progress: Progress | None = None,
) -> Report:
    """Every section of the report for ``run`` on the held-out images of its classes in ``data/split``.

    ``progress(stage, done, total)`` is called with stage "report" and the section count as each
    section starts (its ``section`` title is in ``SECTIONS``), and with the inner stages
    ("features", "protoeval") as they go.
    """
    settings = settings or ReportSettings()
    report = progress or (lambda stage, done, total: None)
    run.check_backbone(backbone)
    data = Path(data)
    if not (data / settings.split).is_dir():
        raise DataError(f"{data / settings.split} does not exist: the report evaluates on held-out images "
                        f"in DIR/{settings.split}/<class folder>/")
    started = time.perf_counter()
    images: dict[str, str] = {}
    seconds: dict[str, float] = {}
    figures: dict = {}
    names = list(SECTIONS)

    def section(key: str, compute):
        report("report", names.index(key), len(names))
        t = time.perf_counter()
        try:
            figures[key] = compute()
        except (DataError, BadImage, FileNotFoundError) as exc:  # a section that cannot be made says why
            figures[key] = _unavailable(str(exc))
        seconds[key] = round(time.perf_counter() - t, 2)

    folders = [c["folder"] for c in run.manifest["classes"]]
    sf = split_features(backbone, data, settings.split, settings.images_per_class, folders, cache_dir, progress)
    if len(set(sf.labels.tolist())) < len(run.classes):
        missing = sorted(set(folders) - {Path(p).parent.name for p in sf.paths})
        raise DataError(f"{data / settings.split} has no images of the run's classes {', '.join(missing[:5])}")
    evaluation = evaluate_run(run, backbone, data, settings.split, features=sf)

    section("exactness", lambda: {"available": True, **{key: evaluation[key] for key in (
        "max_abs_logit_diff", "top1_original", "top1_prototype", "n_images", "n_classes_decomposed")}})
    matrices: list[torch.Tensor] | None = None

    def train():
        nonlocal matrices
        if matrices is None:
            matrices = training_matrices(run, backbone, cache_dir)
        return matrices

    section("table3", lambda: table3_section(run, backbone, sf, train(), settings.ks))
    section("refinement", lambda: refinement_section(run, backbone, sf, evaluation, settings.examples, images))
    section("seed_stability", lambda: seed_stability_section(run, train(), settings.seeds))
    section("protoeval", lambda: protoeval_section(run, backbone, settings.keypoints or data, settings, train(), progress))
    matrices = None  # the training features are no longer needed
    section("axioms", lambda: {"available": True, **check_axioms(run.head(backbone), sf.pooled, sf.logits)})
    section("deletion_insertion", lambda: faithfulness_section(
        run, backbone, sf, settings.faithfulness_images, settings.steps, images))
    section("intervention", lambda: intervention_section(run, backbone, sf))
    report("report", len(names), len(names))

    figures["run"] = {
        "path": str(run.path) if run.path else None,
        "backbone": run.manifest["backbone"],
        "fingerprint": run.manifest["fingerprint"],
        "note": run.manifest.get("note", ""),
        "k": run.k,
        "strategy": run.strategy,
        "classes": run.class_names,
        "train_images_per_class": [c["n_images"] for c in run.manifest["classes"]],
        "intervention": run.manifest.get("intervention"),
        "data": str(data.resolve()),
        "split": settings.split,
        "n_images": len(sf.paths),
        "problems": evaluation["problems"],
        "settings": asdict(settings),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
    }
    return Report(figures, images)


def report_paths(out: str | Path) -> tuple[Path, Path]:
    """(HTML, JSON beside it) for ``out``; checked before the report is built, not after."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {out} must be an .html file (the JSON goes beside it)")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name the .html file to write")
    return out, out.with_suffix(".json")


def report_documents(report: Report) -> tuple[str, str]:
    """(the HTML page, the JSON text): what is written to disk or offered for download."""
    from .report_html import render

    return render(report), json.dumps(report.figures, indent=2)


def write_report(report: Report, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and the same figures as JSON beside it (``out`` with .json), atomically."""
    out, target_json = report_paths(out)
    page, text = report_documents(report)  # rendered first: a failure writes neither file
    with atomic_path(target_json) as tmp:
        tmp.write_text(text)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out, target_json
