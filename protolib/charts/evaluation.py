"""Charts of a run's evaluation, drawn the same way by the app and the report: the paper's Table 3 and
Figure 5, heatmap fidelity per refinement strategy, the choice of k, seed stability, ProtoEval and the
deletion / insertion curves. Each returns a plotly figure; the caller adds its frame (title, size)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..palette import (
    CORAL,
    GREEN,
    GREY,
    HEAD_ROWS_COLOURS,
    INK,
    NAVY,
    OTHER,
    PURPLE,
    SALIENCY_COLOURS,
    SAND,
    STRATEGY_COLOURS,
    TEAL,
)
from .text import escaped, percent

#: the reconstruction errors (``errors_against_k``'s columns) and how a chart names them
ERROR_NAMES = {
    "feature reconstruction error": "feature error ‖A − EP‖/‖A‖",
    "head reconstruction error": "head error ‖v − Σαp‖/‖v‖",
}
#: the head rows of Table 3: the report's keys and their names
HEAD_ROWS = {"prototypes_only": "prototypes only", "residual_only": "residual only", "both": "both"}
ERROR_COLOURS = {"feature reconstruction error": TEAL, "head reconstruction error": CORAL}


def table3_bars(rows: Sequence[dict], k: int) -> go.Figure:
    """Top-1 with NMF prototypes only, the residual only, and both (the paper's Table 3), one group of
    bars per label space."""
    spaces = [c for c in rows[0] if c != "head rows"]
    names = [r["head rows"] for r in rows]
    fig = go.Figure(
        [
            go.Bar(
                x=names,
                y=[r[space] for r in rows],
                name=space,
                marker_color=colour,
                text=[percent(r[space]) for r in rows],
                textposition="outside",
            )
            for space, colour in zip(spaces, (TEAL, GREY))
        ]
    )
    fig.update_layout(
        title={"text": f"Top-1 by head rows used, k = {k} (Table 3)", "font": {"size": 15}},
        barmode="group",
        height=330,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        yaxis={"range": [0, 1.12], "tickformat": ".0%"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def table3_by_k(ks: Sequence[int], among: Mapping[str, Sequence[float]]) -> go.Figure:
    """Top-1 among the run's classes with the head rows replaced by the prototypes only, the residual only,
    or both (``among``: ``prototypes_only``, ``residual_only``, ``both``, one value per k), grouped by k."""
    fig = go.Figure(
        [
            go.Bar(
                x=[str(k) for k in ks],
                y=among[key],
                name=name,
                marker_color=HEAD_ROWS_COLOURS[name],
                text=[percent(v) for v in among[key]],
            )
            for key, name in HEAD_ROWS.items()
        ]
    )
    fig.update_layout(barmode="group", yaxis={"tickformat": ".0%", "range": [0, 1.08]}, xaxis={"title": "k", "type": "category"})
    return fig


def fidelity_bars(rows: Sequence[dict]) -> go.Figure:
    """Signed heatmap fidelity per refinement strategy: the mean as a bar, the worst prototype as a mark
    (below 0: a prototype whose refined heatmap turned against its part)."""
    names = [r["strategy"] for r in rows]
    means, worst = [r["mean"] for r in rows], [r["worst prototype"] for r in rows]
    fig = go.Figure(
        [
            go.Bar(
                x=names,
                y=means,
                name="mean over prototypes",
                marker_color=[STRATEGY_COLOURS.get(n, OTHER) for n in names],
                text=[f"{v:.3f}" for v in means],
                textposition="outside",
            ),
            go.Scatter(
                x=names,
                y=worst,
                mode="markers",
                name="worst prototype",
                marker={"symbol": "line-ew-open", "size": 34, "color": NAVY, "line": {"width": 3, "color": NAVY}},
            ),
        ]
    )
    low = min([0.0, *means, *worst])
    fig.update_layout(
        title={"text": "Heatmap fidelity per refinement strategy", "font": {"size": 15}},
        height=330,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        yaxis={"range": [low - 0.1 if low < 0 else 0, 1.12]},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def errors_against_k(by_k: Mapping) -> go.Figure:
    """Mean feature and head reconstruction errors per k (Figure 5's analogue); ``by_k`` has the column
    ``k`` and the columns of ``ERROR_NAMES`` (a data frame or a dict of lists)."""
    fig = go.Figure(
        [
            go.Scatter(x=by_k["k"], y=by_k[col], mode="lines+markers", name=name, line={"color": ERROR_COLOURS[col]})
            for col, name in ERROR_NAMES.items()
        ]
    )
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 20, "b": 10},
        xaxis={"title": "k", "dtick": 1},
        yaxis={"title": "relative error", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def k_choice_chart(per_k: Sequence[dict], chosen: int | None, min_fidelity: float) -> go.Figure:
    """Against k: head and feature errors (left), signed fidelity and seed stability (right), the fidelity
    threshold dotted and the k the data supports marked."""
    ks = [p["k"] for p in per_k]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Reconstruction errors", "Fidelity and stability"), horizontal_spacing=0.1)
    for key, colour, col in (
        ("head error", CORAL, 1),
        ("feature error", TEAL, 1),
        ("fidelity", GREEN, 2),
        ("seed stability", PURPLE, 2),
    ):
        fig.add_trace(
            go.Scatter(x=ks, y=[p.get(key) for p in per_k], mode="lines+markers", name=key, line={"color": colour}), row=1, col=col
        )
    fig.add_hline(y=min_fidelity, line_dash="dot", line_color=GREEN, row=1, col=2)
    if chosen is not None:
        for col in (1, 2):
            fig.add_vline(x=chosen, line_dash="dash", line_color=INK, row=1, col=col)
    fig.update_xaxes(title_text="k", dtick=1)
    fig.update_yaxes(title_text="relative error", rangemode="tozero", row=1, col=1)
    measured = [p[key] for p in per_k for key in ("fidelity", "seed stability") if p.get(key) is not None]
    fig.update_yaxes(range=[min([min_fidelity - 0.05, *measured]) - 0.02, 1.01], row=1, col=2)
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig


def class_bars(names: Sequence[str], values: Sequence[float], decimals: int = 3) -> go.Figure:
    """One value per class (seed stability, agreement between runs) as bars, the class names escaped."""
    return go.Figure(go.Bar(x=escaped(names), y=list(values), marker_color=TEAL, text=[f"{v:.{decimals}f}" for v in values]))


def protoeval_bars(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> go.Figure:
    """ProtoEval consistency and stability (%) for each prototype kind (``nmf``, ``refined``) and map."""
    methods = list(scores)
    maps = list(scores[methods[0]])
    labels = [f"{m} · {kind}" for m in methods for kind in maps]
    fig = go.Figure(
        [
            go.Bar(
                x=labels,
                y=[scores[m][kind][metric] for m in methods for kind in maps],
                name=metric,
                text=[f"{scores[m][kind][metric]:.1f}" for m in methods for kind in maps],
                marker_color=colour,
            )
            for metric, colour in (("consistency", TEAL), ("stability", SAND))
        ]
    )
    fig.update_layout(barmode="group", yaxis={"range": [0, 105]})
    return fig


def saliency_curves(fractions: Sequence[float], methods: Mapping[str, Mapping], kind: str) -> go.Figure:
    """The mean ``kind`` ("deletion" or "insertion") curve of each saliency map, its AUC in the legend."""
    fig = go.Figure(
        [
            go.Scatter(
                x=list(fractions),
                y=v[f"{kind}_curve"],
                mode="lines+markers",
                line={"color": SALIENCY_COLOURS.get(m, OTHER)},
                name=f"{m} (AUC {v[f'{kind}_auc']['mean']:.3f})",
            )
            for m, v in methods.items()
        ]
    )
    fig.update_layout(
        xaxis={"title": "fraction of pixels", "tickformat": ".0%"}, yaxis={"title": "class probability", "range": [0, 1.02]}
    )
    return fig
