"""One evaluation report of a run: every figure of the paper's evaluation, faithfulness and
intervention, gathered into one JSON-able dict (rendered to HTML by ``report.html``).

Sections, in order: exactness, Table 3 / Figure 5 against k, refinement fidelity (with example
heatmaps), stability across NMF seeds, ProtoEval consistency and stability (where keypoints exist),
explainability axioms, deletion / insertion against Grad-CAM, and intervention. The backbone runs
once per image: held-out and training features come from the disk cache, and only the few images of
the heatmap examples and of the deletion / insertion curves are passed through it again.

Each section is computed by its module (``build_method``, ``build_faithfulness``, ``build_comparison``);
this one runs them in order, times them, and writes the page and its JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import torch

from ..backbones import Backbone, BackboneError
from ..data import BadImage, DataError, available_splits
from ..data.features import CacheDir, Progress, split_features
from ..evaluation.compare import CompareError
from ..evaluation.faithfulness import check_axioms
from ..evaluation.metrics import evaluate_run, training_matrices
from ..files import atomic_path
from ..runs import Run, RunError
from .build_comparison import comparison_section
from .build_faithfulness import faithfulness_section, intervention_section, mistakes_section
from .build_method import protoeval_section, refinement_section, seed_stability_section, table3_section
from .html import render
from .sections import SECTIONS, Report, not_computed
from .settings import ReportSettings


def build_report(
    run: Run,
    backbone: Backbone,
    data: str | Path,
    settings: ReportSettings | None = None,
    cache_dir: CacheDir = None,
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

    def section(key: str, compute: Callable[[], dict]) -> None:
        report("report", names.index(key), len(names))
        t = time.perf_counter()
        try:
            figures[key] = compute()
        except (DataError, BadImage, FileNotFoundError) as exc:  # a section that cannot be made says why
            figures[key] = not_computed(str(exc))
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

    def train() -> list[torch.Tensor]:
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
            figures["comparison"] = not_computed(str(exc))
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
        "prototype_names": {name: names for name, names in zip(run.class_names, run.prototype_name_grid()) if any(names)},
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
