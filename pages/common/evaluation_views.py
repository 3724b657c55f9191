"""What Evaluate shows of a run's evaluation, computed without Streamlit: its figures with what each means, the
paper's Table-3 analogue, heatmap fidelity per refinement strategy, and reconstruction errors against k.

Plain Python on dicts, so it is tested without a browser; the page only lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Figure:
    key: str
    name: str
    meaning: str
    percent: bool = True


FIGURES = [
    Figure("top1_original", "Top-1, original model", "accuracy of the model as it is"),
    Figure("top1_prototype", "Top-1, prototype network", "the same by construction (the head is rewritten exactly)"),
    Figure("max_abs_logit_diff", "Max |logit difference|", "exactness: largest logit change over all images", False),
    Figure("feature_reconstruction_error", "Feature reconstruction error", "‖A − E P‖ / ‖A‖ of the NMF", False),
    Figure("head_reconstruction_error", "Head reconstruction error", "‖v − Σ alpha_i p_i‖ / ‖v‖", False),
]
#: the label spaces of ``metrics.table3``
TABLE3_SPACES = {"among_run_classes": "among the run's classes", "all_classes": "among all the model's classes"}
TABLE3_ROWS = {
    "prototypes_only": ("NMF prototypes only", "head rows replaced by Σ alpha_i p_i (Table 3)"),
    "residual_only": ("residual only", "head rows replaced by the residual R (Table 3)"),
    "both": ("both (prototype network)", "the whole head rows"),
}


def evaluation_rows(metrics: Mapping) -> list[dict]:
    """The figures of ``evaluate_run`` as (figure, value, meaning) rows, values formatted."""
    rows = []
    for f in FIGURES:
        if f.key in metrics:
            value = metrics[f.key]
            text = f"{100 * value:.1f} %" if f.percent else f"{value:.3g}"
            rows.append({"figure": f.name, "value": text, "meaning": f.meaning})
    for space, where in TABLE3_SPACES.items():
        for key, value in metrics.get("table3", {}).get(space, {}).items():
            if key != "both":
                name, meaning = TABLE3_ROWS[key]
                rows.append({"figure": f"Top-1, {name}, {where}", "value": f"{100 * value:.1f} %", "meaning": meaning})
    for row in fidelity_rows(metrics):
        mark = " (this run)" if row["this run"] else ""
        rows.append(
            {
                "figure": f"Heatmap fidelity, {row['strategy']}{mark}",
                "value": f"{row['mean']:.3f} (worst {row['worst prototype']:+.3f}, {row['flips']} flipped)",
                "meaning": "signed Pearson of NMF and refined heatmaps on held-out images (below 0: the prototype flipped)",
            }
        )
    rows.append({"figure": "Images", "value": str(metrics.get("n_images", "")), "meaning": "evaluated images"})
    return rows


def fidelity_rows(metrics: Mapping) -> list[dict]:
    """Signed heatmap fidelity per refinement strategy: mean, worst prototype, and prototypes that flipped."""
    return [
        {
            "strategy": name,
            "mean": f["mean"],
            "worst prototype": f["min"],
            "flips": f["flips"],
            "this run": name == metrics.get("strategy"),
        }
        for name, f in metrics.get("signed_fidelity", {}).items()
    ]


def fidelity_per_class_rows(metrics: Mapping, class_names: Sequence[str]) -> list[dict]:
    """Per decomposed class, the mean signed fidelity of each strategy."""
    per = {s: f["per_class"] for s, f in metrics.get("signed_fidelity", {}).items()}
    classes = sorted({int(c) for values in per.values() for c in values})
    return [{"class": class_names[c], **{s: per[s].get(str(c)) for s in per}} for c in classes]


def table3_rows(metrics: Mapping) -> list[dict]:
    """The paper's Table-3 analogue: top-1 with NMF prototypes only, the residual only, and both, in
    each label space."""
    table = metrics["table3"]
    return [
        {"head rows": name, **{where: table[space][key] for space, where in TABLE3_SPACES.items() if space in table}}
        for key, (name, _) in TABLE3_ROWS.items()
    ]


def k_sweep_rows(runs: Sequence, weight: torch.Tensor) -> list[dict]:
    """Reconstruction errors against k for runs of one model (Figure 5's analogue); needs no images."""
    rows = []
    for run in runs:
        rows.append(
            {
                "run": run.path.name if run.path else "",
                "k": run.k,
                "strategy": run.strategy,
                "classes": len(run.classes),
                "feature reconstruction error": float(run.feature_error.mean()),
                "head reconstruction error": float(run.head_error(weight.cpu()).mean()),
            }
        )
    return sorted(rows, key=lambda r: (r["k"], r["run"]))
