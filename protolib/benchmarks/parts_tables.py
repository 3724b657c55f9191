"""The parts benchmark's results (``parts.run_parts_benchmark_seeds``) as markdown tables: the part scores
per k and method, and what each discovery's prototypes explain of the model."""

from __future__ import annotations

from ..method.discovery import DISCOVERY_LABELS
from .parts_methods import METHOD_LABELS


def _cell(figure: dict, digits: int = 1) -> str:
    interval = figure["ci95"]
    return f"{figure['mean']:.{digits}f}" + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")


def headline_table(results: dict) -> str:
    """The results of :func:`run_parts_benchmark_seeds` as a markdown table: per k and method, mean
    [95 % interval] of consistency and stability on the maps each method is shown with (headline), and
    consistency on the coefficient maps (secondary)."""
    rows = [
        "| k | method | consistency % (maps) | stability % (maps) | consistency % (coefficients, secondary) |",
        "|---|---|---|---|---|",
    ]
    for label, per_method in results["scores_by_k"].items():
        for method, per_reading in per_method.items():
            maps, coefficients = per_reading["maps"], per_reading["coefficients"]
            rows.append(
                f"| {label} | {METHOD_LABELS.get(method, method)} | {_cell(maps['consistency'])} | "
                f"{_cell(maps['stability'])} | {_cell(coefficients['consistency'])} |"
            )
    return "\n".join(rows)


def discovery_table(results: dict) -> str:
    """Per k and discovery (the paper's NMF and each variant), what its prototypes explain of the model:
    head error ||v - sum alpha p|| / ||v|| and Table 3's "prototypes only" top-1 on the test images, beside
    the model's own top-1 (mean [95 % interval] over seeds)."""
    rows = ["| k | discovery | head error | top-1 %, prototypes only | top-1 %, the model |", "|---|---|---|---|---|"]
    for label, per_name in results["discovery_by_k"].items():
        for name, figures in per_name.items():
            rows.append(
                f"| {label} | {DISCOVERY_LABELS[name]} | {_cell(figures['head_error'], 3)} | "
                f"{_cell(figures['prototypes_only'])} | {_cell(figures['top1'])} |"
            )
    return "\n".join(rows)
