"""The report's comparison section: the run side by side with other runs on the same held-out photos (the
paper's Figure 3), and the report of a comparison alone (``python -m protolib compare``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..backbones import Backbone
from ..data import DataError
from ..data.features import CacheDir, Progress
from ..evaluation.compare import Comparison, compare_runs, run_label, shared_classes
from ..runs import Run, load_run
from .pictures import png
from .sections import Report, not_computed
from .settings import ReportSettings

COMPARISON_GALLERIES = 3  # classes whose heatmaps are shown (the least agreeing); the others as numbers


def comparison_figures(
    comparisons: list[Comparison], images: dict, galleries: int = COMPARISON_GALLERIES, skipped: dict | None = None
) -> dict:
    """The "comparison" section of compared classes: per class the numbers of ``Comparison.summary``, and
    for the ``galleries`` least agreeing classes the photo the runs disagree on most, each run's part map
    and heatmaps lined up with the first run's matched prototypes (PNGs in ``images``)."""
    if not comparisons:
        return not_computed("no class to compare: " + "; ".join(f"{c}: {r}" for c, r in (skipped or {}).items()))
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
    cache_dir: CacheDir = None,
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
    cache_dir: CacheDir = None,
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
