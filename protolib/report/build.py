"""One evaluation report of a run: every figure of the paper's evaluation, faithfulness and
intervention, gathered into one JSON-able dict (rendered to HTML by ``report.html``).

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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment

from ..backbones import Backbone, BackboneError
from ..data import BadImage, DataError, available_splits
from ..data.features import Progress, SplitFeatures, split_features
from ..evaluation.compare import MAPS, MAX_RUNS, CompareError, Comparison, compare_runs, run_label, shared_classes
from ..evaluation.faithfulness import auc, check_axioms, deletion_insertion, grad_cam
from ..evaluation.intervention import oracle_intervention, prototype_importance
from ..evaluation.keypoints import csv_class_batches, keypoint_layout
from ..evaluation.metrics import (
    among_decomposed,
    evaluate_run,
    oriented_prototypes,
    pearson,
    table3,
    training_matrices,
)
from ..evaluation.mistakes import mistakes_json
from ..evaluation.part_scores import cub_protoeval, protoeval_scores
from ..explain import heatmap_overlay, model_input, upsample
from ..files import atomic_path
from ..method.discovery import discover
from ..method.head import PrototypeHead
from ..method.refine import MAX_K, approximation, head_error, scale_prototypes
from ..runs import Run, RunError, load_run
from .html import render
from .sections import SECTIONS, Report

TABLE3_KS = (1, 3, 5, 10)


@dataclass(frozen=True)
class ReportSettings:
    """How much work the report does; the defaults build a 10-class report in a few CPU minutes."""

    split: str = "val"
    images_per_class: int | None = None  # held-out images per class (None: all)
    ks: tuple[int, ...] = TABLE3_KS
    seeds: int = 3  # NMF seeds compared (the run's own and seeds - 1 more)
    examples: int = 3  # images whose heatmaps are shown before and after refinement
    faithfulness_images: int = 100  # held-out images of the deletion / insertion curves
    steps: int = 8  # points of each deletion / insertion curve, after the first
    protoeval_images_per_class: int | None = None
    keypoints: str | None = None  # a CUB root or a folder with keypoints.csv (default: the data folder)
    compare_with: tuple[str, ...] = ()  # other run folders shown side by side with this run ("comparison")
    compare_class: str | None = None  # the class they are compared on (default: every class they share)
    compare_photos: int = 6  # held-out photos of each compared class
    compare_maps: str = "heatmaps"  # what prototypes are matched on (protolib.evaluation.compare.MAPS)

    def __post_init__(self):
        object.__setattr__(self, "compare_with", tuple(str(p) for p in self.compare_with))  # JSON-able
        if len(self.compare_with) > MAX_RUNS - 1:
            raise ValueError(f"compare_with: at most {MAX_RUNS - 1} other runs ({MAX_RUNS} side by side)")
        if self.compare_photos < 1:
            raise ValueError("compare_photos must be at least 1")
        if self.compare_maps not in MAPS:
            raise ValueError(f"compare_maps={self.compare_maps!r}: choose one of {', '.join(MAPS)}")
        if self.seeds < 2:
            raise ValueError(f"seeds={self.seeds}: stability needs at least 2 NMF seeds to compare")
        if self.steps < 1 or self.faithfulness_images < 1:
            raise ValueError("deletion/insertion needs at least 1 image and 1 step")
        if not self.ks or any(not 1 <= k <= MAX_K for k in self.ks):
            raise ValueError(f"k values {self.ks} must lie in 1..{MAX_K}")


def png(image: np.ndarray, size: int = 128) -> str:
    """An RGB uint8 image as base64 PNG, downsized for the page."""
    buffer = io.BytesIO()
    Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _unavailable(reason: str) -> dict:
    return {"available": False, "reason": reason}


# -- sections --------------------------------------------------------------------------------------
def table3_section(run: Run, backbone: Backbone, sf: SplitFeatures, matrices: list[torch.Tensor], ks) -> dict:
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
            run.discovery, matrices, k, v, seed=run.params.get("random_state", 0), solver=run.params.get("solver", "hals")
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
    head_rows = run.refined[run.strategy].sum(dim=1)  # the refined prototypes sum to the head rows exactly
    reference = torch.nn.functional.normalize(run.nmf_prototypes.float(), dim=-1)
    similarity = torch.zeros(len(run.classes), max(seeds - 1, 0))
    for s in range(1, seeds):
        other = discover(
            run.discovery, matrices, run.k, head_rows, seed=own + s, solver=run.params.get("solver", "hals")
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


def protoeval_section(run: Run, backbone: Backbone, source: str | Path, settings: ReportSettings, progress) -> dict:
    """ProtoEval scores where ``source`` has keypoints; otherwise a clear reason. The refined prototypes
    are turned by the sign of their alpha (see ``metrics.oriented_prototypes``)."""

    layout = keypoint_layout(source, settings.split)
    if layout is None:
        return _unavailable(f"no keypoints in this data ({source}): ProtoEval needs a CUB-200-2011 folder or a keypoints.csv")
    kind, path = layout
    if kind == "cub":
        result = cub_protoeval(run, backbone, path, settings.protoeval_images_per_class, progress=progress)
        return {"available": True, "source": str(path), **result}
    batches = list(csv_class_batches(backbone, run, source, path, settings.split, settings.protoeval_images_per_class, progress))
    if not batches:
        return _unavailable(f"{path} has no keypoints for the run's classes in {settings.split}/")
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


def _spread(sf: SplitFeatures, n: int) -> list[int]:
    """Indices of n held-out images taken round-robin over the classes (so every class is seen)."""
    by_class = [(sf.labels == label).nonzero().flatten().tolist() for label in sf.labels.unique().tolist()]
    picked: list[int] = []
    rank = 0
    while len(picked) < n and any(rank < len(members) for members in by_class):
        picked += [members[rank] for members in by_class if rank < len(members)]
        rank += 1
    return picked[:n]


def _forward(backbone: Backbone, path: str):
    x, shown = model_input(backbone, path)
    feats, logits = backbone(x.to(backbone.device))
    return x, shown, feats[0].float().cpu(), logits[0].float().cpu()


def refinement_section(run: Run, backbone: Backbone, sf: SplitFeatures, evaluation: dict, examples: int, images: dict) -> dict:
    """Signed held-out fidelity per strategy, and a few images' heatmaps before (the scaled NMF part
    alpha_i p_i) and after refinement (the run's p~_i), with their correlation on that image."""
    head = run.head(backbone)
    shown: list[dict] = []
    for n in _spread(sf, examples):
        label = int(sf.labels[n])
        position = head.position(label)
        _, picture, feats, _ = _forward(backbone, sf.paths[n])
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


SALIENCY_MAPS = ("refined heatmap", "NMF part map", "Grad-CAM", "random")


def mean_interval(values: list[float]) -> dict:
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
    for j, n in enumerate(_spread(sf, n_images)):
        label = int(sf.labels[n])
        position = head.position(label)
        x, picture, feats, _ = _forward(backbone, sf.paths[n])
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
            **{f"{kind}_auc": mean_interval(aucs[m][kind]) for kind in ("deletion", "insertion")},
            **{f"{kind}_curve": torch.stack(curves[m][kind]).mean(dim=0).tolist() for kind in ("deletion", "insertion")},
        }
        if m != "Grad-CAM":
            summary[m]["minus_gradcam"] = {
                kind: mean_interval(list(np.subtract(aucs[m][kind], aucs["Grad-CAM"][kind]))) for kind in ("deletion", "insertion")
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

    figures = mistakes_json(run.head(backbone), sf.pooled, sf.labels, sf.paths, backbone.labels, run.class_names)
    section = {"available": True, **small(figures)}
    if "run_classes" in figures:
        section["run_classes"] = small(figures["run_classes"])
    return section


# -- runs side by side (the paper's Figure 3) ---------------------------------------------------------
COMPARISON_GALLERIES = 3  # classes whose heatmaps are shown (the least agreeing); the others as numbers


def comparison_figures(
    comparisons: list[Comparison], images: dict, galleries: int = COMPARISON_GALLERIES, skipped: dict | None = None
) -> dict:
    """The "comparison" section of compared classes: per class the numbers of ``Comparison.summary``, and
    for the ``galleries`` least agreeing classes the photo the runs disagree on most, each run's part map
    and heatmaps lined up with the first run's matched prototypes (PNGs in ``images``)."""
    if not comparisons:
        return _unavailable("no class to compare: " + "; ".join(f"{c}: {r}" for c, r in (skipped or {}).items()))
    first = comparisons[0]
    ranked = sorted(range(len(comparisons)), key=lambda n: comparisons[n].agreement)[:galleries]
    classes = []
    for n, comparison in enumerate(comparisons):
        entry = comparison.summary()
        if n in ranked:
            photo = comparison.disagreeing(1)[0]
            key = f"compare{n}"
            entry["gallery"] = {"key": key, "photo": photo, "columns": []}
            for s, side in enumerate(comparison.sides):
                images[f"{key}.run{s}.part"] = png(side.part_map_image(photo))
                columns = comparison.columns(s)
                entry["gallery"]["columns"].append([None if i is None else i + 1 for i in columns])
                for i in columns:
                    if i is not None:
                        images[f"{key}.run{s}.p{i}"] = png(side.heatmap_image(photo, i))
        classes.append(entry)
    return {
        "available": True,
        "maps": first.maps,
        "runs": [{"name": s.name, "backbone": s.backbone, "k": s.k, "strategy": s.strategy} for s in first.sides],
        "agreement": float(np.mean([c.agreement for c in comparisons])),
        "classes": classes,
        "skipped": dict(skipped or {}),
    }


def _backbone_of(other: Run, backbone: Backbone) -> Backbone:
    """The model a run was made from: ``backbone`` when it is the same, else loaded on its device."""
    if other.manifest["backbone"] == backbone.name and other.manifest["fingerprint"] == backbone.fingerprint:
        other.check_backbone(backbone)
        return backbone
    return other.load_backbone(backbone.device)


def comparison_section(
    run: Run,
    backbone: Backbone,
    data: str | Path,
    settings: ReportSettings,
    images: dict,
    cache_dir=None,
    progress: Progress | None = None,
) -> dict:
    """``run`` side by side with the runs of ``settings.compare_with`` on the held-out photos of the class
    ``settings.compare_class`` (default: of every class they share)."""
    others = [load_run(p) for p in settings.compare_with]
    runs = [run, *others]
    backbones = [backbone, *(_backbone_of(o, backbone) for o in others)]
    names = [run_label(r, f"run {i + 1}") for i, r in enumerate(runs)]
    if settings.compare_class:
        wanted = [settings.compare_class]
    else:
        wanted = [c.name for c in shared_classes([r.manifest for r in runs])]
        if not wanted:  # let compare_runs say which classes each run has
            wanted = [run.class_names[0]]
    heads = [r.head(b) for r, b in zip(runs, backbones)]
    comparisons, skipped = [], {}
    for n, name in enumerate(wanted):
        if progress:
            progress("comparison", n, len(wanted))
        try:
            comparisons.append(
                compare_runs(
                    runs,
                    backbones,
                    data,
                    name,
                    settings.split,
                    settings.compare_photos,
                    names,
                    heads,
                    maps=settings.compare_maps,
                    cache_dir=cache_dir,
                )
            )
        except DataError as exc:  # this class has no usable held-out photos: the others go on
            skipped[name] = str(exc)
    if progress:
        progress("comparison", len(wanted), len(wanted))
    return comparison_figures(comparisons, images, skipped=skipped)


def comparison_report(
    runs: list[Run],
    backbones: list[Backbone],
    data: str | Path,
    class_name: str,
    split: str = "val",
    photos: int = 6,
    maps: str = "heatmaps",
    cache_dir=None,
) -> tuple[Report, Comparison]:
    """A report of the comparison alone (``python -m protolib compare``): its section and its Comparison."""
    started = time.perf_counter()
    comparison = compare_runs(runs, backbones, data, class_name, split, photos, maps=maps, cache_dir=cache_dir)
    images: dict[str, str] = {}
    figures = {
        "comparison": comparison_figures([comparison], images),
        "run": {
            "paths": [str(r.path) if r.path else None for r in runs],
            "data": str(Path(data).resolve()),
            "split": split,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": {"total": round(time.perf_counter() - started, 2)},
        },
    }
    return Report(figures, images), comparison


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
    if settings.split not in available_splits(data):
        raise DataError(
            f"{data / settings.split} does not exist: the report evaluates on held-out images "
            f"in DIR/{settings.split}/<class folder>/ (or DIR/<class folder>/, held out by file name)"
        )
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
    evaluation = evaluate_run(run, backbone, data, settings.split, cache_dir=cache_dir, features=sf)

    section(
        "exactness",
        lambda: {
            "available": True,
            **{
                key: evaluation[key]
                for key in ("max_abs_logit_diff", "top1_original", "top1_prototype", "n_images", "n_classes_decomposed")
            },
        },
    )
    matrices: list[torch.Tensor] | None = None

    def train():
        nonlocal matrices
        if matrices is None:
            matrices = training_matrices(run, backbone, cache_dir)
        return matrices

    section("table3", lambda: table3_section(run, backbone, sf, train(), settings.ks))
    section("refinement", lambda: refinement_section(run, backbone, sf, evaluation, settings.examples, images))
    section("seed_stability", lambda: seed_stability_section(run, train(), settings.seeds))
    section("protoeval", lambda: protoeval_section(run, backbone, settings.keypoints or data, settings, progress))
    matrices = None  # the training features are no longer needed
    section("axioms", lambda: {"available": True, **check_axioms(run.head(backbone), sf.pooled, sf.logits)})
    section(
        "deletion_insertion", lambda: faithfulness_section(run, backbone, sf, settings.faithfulness_images, settings.steps, images)
    )
    section("intervention", lambda: intervention_section(run, backbone, sf))
    section("mistakes", lambda: mistakes_section(run, backbone, sf))
    report("report", len(names), len(names))
    if settings.compare_with:  # optional: only when asked for
        t = time.perf_counter()
        try:
            figures["comparison"] = comparison_section(run, backbone, data, settings, images, cache_dir, progress)
        except (CompareError, DataError, RunError, BackboneError) as exc:
            figures["comparison"] = _unavailable(str(exc))
        seconds["comparison"] = round(time.perf_counter() - t, 2)

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
        "prototype_labels": {name: names for name, names in zip(run.class_names, run.label_grid()) if any(names)},
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
