"""Charts of what prototypes contribute, drawn the same way by the app and the report: one prediction's
waterfall, logits before and after an edit, the Table-4 oracle, prototype importance, and runs side by side
(contributions and agreement per photo). Each returns a plotly figure."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..palette import CORAL, GREEN, GREY, INK, RUN_COLOURS, TEAL, prototype_hex
from .text import escaped, percent, prototype_title


def waterfall(contributions: torch.Tensor, bias: float, title: str, prototype_names: Sequence[str] = ()) -> go.Figure:
    """Per-prototype contributions + bias = logit, as a plotly waterfall (``prototype_names``: the prototypes' names)."""
    k = len(contributions)
    titles = [prototype_title(i, prototype_names[i] if i < len(prototype_names) else "") for i in range(k)]
    names = [f'<span style="color:{prototype_hex(i)}"><b>{html.escape(t)}</b></span>' for i, t in enumerate(titles)]
    values = [bias] + [float(c) for c in contributions]
    total = sum(values)
    fig = go.Figure(
        go.Waterfall(
            x=["bias", *names, "logit"],
            measure=["relative"] * (k + 1) + ["total"],
            y=[*values, total],
            text=[f"{v:+.2f}" for v in values] + [f"{total:.2f}"],
            textposition="outside",
            connector={"line": {"color": "rgba(120,120,120,.5)", "dash": "dot"}},
            increasing={"marker": {"color": GREEN}},
            decreasing={"marker": {"color": CORAL}},
            totals={"marker": {"color": INK}},
        )
    )
    span = max(abs(v) for v in [*values, total, 1e-6])
    running = np.cumsum(values)
    fig.update_layout(
        title={"text": html.escape(title), "font": {"size": 15}},
        height=340,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
        yaxis={
            "title": "logit",
            "zeroline": True,
            "range": [min(0, min(running), total) - 0.25 * span, max(0, max(running), total) + 0.25 * span],
        },
    )
    return fig


def logit_bars(classes: Sequence[str], original: Sequence[float], edited: Sequence[float]) -> go.Figure:
    """Original and edited logits of some classes, side by side."""
    shown = escaped(classes)
    fig = go.Figure(
        [
            go.Bar(name="original", y=shown, x=list(original), orientation="h", marker_color=GREY),
            go.Bar(name="edited", y=shown, x=list(edited), orientation="h", marker_color=TEAL),
        ]
    )
    fig.update_layout(
        barmode="group",
        height=80 + 34 * len(classes),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis={"autorange": "reversed"},
        xaxis={"title": "logit"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def oracle_bars(scopes: Sequence[str], before: Sequence[float], after: Sequence[float]) -> go.Figure:
    """Top-1 before and with the Table-4 oracle, one group of bars per label space (``scopes``)."""
    fig = go.Figure(
        [
            go.Bar(x=list(scopes), y=list(values), name=name, marker_color=colour, text=[percent(v) for v in values])
            for values, name, colour in ((before, "before", GREY), (after, "with the oracle", TEAL))
        ]
    )
    fig.update_layout(barmode="group", yaxis={"tickformat": ".0%", "range": [0, 1.08]})
    return fig


def importance_heatmap(importance: Mapping[str, Sequence[float]]) -> go.Figure:
    """Each class's top-1 drop (in points) when one of its prototypes is switched off, classes as rows."""
    names = list(importance)
    k = len(next(iter(importance.values())))
    fig = go.Figure(
        go.Heatmap(
            z=[[100 * v for v in importance[n]] for n in names],
            x=[f"P{i + 1}" for i in range(k)],
            y=escaped(names),
            colorscale="RdBu",
            zmid=0,
            colorbar={"title": "pts"},
            text=[[f"{100 * v:+.1f}" for v in importance[n]] for n in names],
            texttemplate="%{text}",
        )
    )
    fig.update_layout(yaxis={"autorange": "reversed"})
    return fig


def contribution_bars(rows: Sequence[dict]) -> go.Figure:
    """Each compared run's prototypes: mean contribution as bars, share of the evidence as text."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    fig = go.Figure(
        [
            go.Bar(
                x=[r["prototype"] for r in rows if r["run"] == run],
                y=[r["mean contribution"] for r in rows if r["run"] == run],
                name=html.escape(run),  # a run's folder name: text from data
                marker_color=RUN_COLOURS[n % len(RUN_COLOURS)],
                text=[f"{100 * r['share']:.0f} %" for r in rows if r["run"] == run],
                textposition="outside",
            )
            for n, run in enumerate(runs)
        ]
    )
    fig.update_layout(
        barmode="group",
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        yaxis={"title": "mean contribution to the logit", "zeroline": True},
        xaxis={"title": "prototype"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def photo_agreement_bars(labels: Sequence[str], values: Sequence[float], lowest: Sequence[int]) -> go.Figure:
    """Each compared photo's agreement (mean matched correlation on that photo), the lowest highlighted."""
    colours = [CORAL if i in set(lowest) else GREY for i in range(len(values))]
    fig = go.Figure(
        go.Bar(x=list(labels), y=list(values), marker_color=colours, text=[f"{v:.2f}" for v in values], textposition="outside")
    )
    low = min([0.0, *values])
    fig.update_layout(
        height=260,
        margin={"l": 10, "r": 10, "t": 20, "b": 10},
        yaxis={"title": "agreement", "range": [low - 0.05 if low < 0 else 0, 1.12]},
    )
    return fig
