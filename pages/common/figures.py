"""What the pages draw the same way: prototype colour chips and the legend, the plotly charts, and
the table of skipped files."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from pages.common.viewmodels import problem_rows
from protolib.explain import prototype_hex

#: the caption every part map carries: part maps come from the NMF parts, the rest from refined prototypes
PART_MAP_NOTE = "NMF parts, before refinement"
STRATEGY_COLOURS = {"optimized": "#0f6e8c", "paper": "#e76f51", "uniform": "#e9c46a", "proportional": "#8ab17d"}
PLAIN = {"displayModeBar": False}


_MARKUP = re.compile(r"([\\`*_\[\]<>!|~$#&@])")
_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(?=://)|(?<=www)(?=\.)|(?=:[a-z])")  # http://, www., :red[ / :emoji:


def md(text: object) -> str:
    """Text from data (a class name, a prototype's label, a file name, an error naming them) as literal text in
    Streamlit markdown, captions, tab and metric labels, and in markdown with ``unsafe_allow_html`` (there ``\\<``
    is a literal ``<``, where ``html.escape`` would leave ``![x](url)`` to markdown). The characters that start
    links, images, HTML, emphasis, math and directives are escaped (``[``, ``!``, ``<``, ``*``, ``$``,
    ``:red``…), bare ``http://`` and ``www.`` are kept from becoming links, and line breaks are flattened: a name
    is shown, never followed or fetched."""
    return _AUTOLINK.sub("\\\\", _MARKUP.sub(r"\\\1", " ".join(str(text).split())))


def chip(i: int, text: str | None = None) -> str:
    """An HTML colour swatch with the prototype's name."""
    label = text if text is not None else f"P{i + 1}"
    return (
        f'<span style="display:inline-flex;align-items:center;gap:.35em;margin-right:.9em">'
        f'<span style="width:.95em;height:.95em;border-radius:3px;background:{prototype_hex(i)};'
        f'display:inline-block;border:1px solid rgba(0,0,0,.15)"></span>{label}</span>'
    )


def legend(k: int, prefix: str = "", names: Sequence[str] = ()) -> None:
    """The prototypes' colours, with their labels (``names``, "" when unnamed) when they have them."""
    titles = [f"Prototype {i + 1}" + (f" · {md(names[i])}" if i < len(names) and names[i] else "") for i in range(k)]
    st.markdown(prefix + "".join(chip(i, title) for i, title in enumerate(titles)), unsafe_allow_html=True)


def named(label: str) -> str:
    """A prototype's label as HTML to put before its numbers (``“fins” · ``), or "" when it has none."""
    return f"<b>“{md(label)}”</b> · " if label else ""


def prototype_title(i: int, label: str = "") -> str:
    """``P2`` or ``P2 “fins”``: a prototype's short name with its label (plain text)."""
    return f"P{i + 1}" + (f" “{label}”" if label else "")


def problems_table(problems: Sequence, title: str) -> None:
    """Skipped files and folders, listed for the user."""
    if not problems:
        return
    with st.expander(f"{title}: {len(problems)}", icon=":material/warning:"):
        st.dataframe(pd.DataFrame(problem_rows(problems)), hide_index=True, width="stretch")


def waterfall(contributions: torch.Tensor, bias: float, title: str, labels: Sequence[str] = ()) -> go.Figure:
    """Per-prototype contributions + bias = logit, as a plotly waterfall (``labels``: the prototypes' names)."""
    k = len(contributions)
    names = [
        f'<span style="color:{prototype_hex(i)}"><b>{html.escape(prototype_title(i, labels[i] if i < len(labels) else ""))}'
        "</b></span>"
        for i in range(k)
    ]
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
            increasing={"marker": {"color": "#2a9d8f"}},
            decreasing={"marker": {"color": "#e76f51"}},
            totals={"marker": {"color": "#264653"}},
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
    shown = [html.escape(c) for c in classes]  # plotly draws <a href> and <b> in labels: a class name is text
    fig = go.Figure(
        [
            go.Bar(name="original", y=shown, x=list(original), orientation="h", marker_color="#b0bec5"),
            go.Bar(name="edited", y=shown, x=list(edited), orientation="h", marker_color="#0f6e8c"),
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
                text=[f"{100 * r[space]:.1f} %" for r in rows],
                textposition="outside",
            )
            for space, colour in zip(spaces, ("#0f6e8c", "#b0bec5"))
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
                name="mean",
                marker_color=[STRATEGY_COLOURS.get(n, "#888") for n in names],
                text=[f"{v:.3f}" for v in means],
                textposition="outside",
            ),
            go.Scatter(
                x=names,
                y=worst,
                mode="markers",
                name="worst prototype",
                marker={"symbol": "line-ew-open", "size": 34, "color": "#1d3557", "line": {"width": 3, "color": "#1d3557"}},
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


def errors_against_k(by_k: pd.DataFrame) -> go.Figure:
    """Mean feature and head reconstruction errors per k (Figure 5's analogue)."""
    fig = go.Figure(
        [
            go.Scatter(x=by_k["k"], y=by_k[col], mode="lines+markers", name=col, line={"color": colour})
            for col, colour in (("feature reconstruction error", "#0f6e8c"), ("head reconstruction error", "#e76f51"))
        ]
    )
    fig.update_layout(
        height=320,
        margin={"l": 10, "r": 10, "t": 20, "b": 10},
        xaxis={"title": "k", "dtick": 1},
        yaxis={"title": "relative error"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def contribution_bars(rows: Sequence[dict]) -> go.Figure:
    """Each compared run's prototypes: mean contribution as bars, share of the evidence as text."""
    runs = list(dict.fromkeys(r["run"] for r in rows))
    palette = ["#0f6e8c", "#e76f51", "#8ab17d"]
    fig = go.Figure(
        [
            go.Bar(
                x=[r["prototype"] for r in rows if r["run"] == run],
                y=[r["mean contribution"] for r in rows if r["run"] == run],
                name=run,
                marker_color=palette[n % len(palette)],
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
    colours = ["#e76f51" if i in set(lowest) else "#b0bec5" for i in range(len(values))]
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


def k_choice_chart(per_k: Sequence[dict], chosen: int | None, min_fidelity: float) -> go.Figure:
    """Against k: head and feature errors (left), signed fidelity and seed stability (right), the fidelity
    threshold dotted and the k the data supports marked."""
    from plotly.subplots import make_subplots

    ks = [p["k"] for p in per_k]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Reconstruction errors", "Fidelity and stability"), horizontal_spacing=0.1)
    for key, colour, col in (
        ("head error", "#e76f51", 1),
        ("feature error", "#0f6e8c", 1),
        ("fidelity", "#2a9d8f", 2),
        ("seed stability", "#8d6cab", 2),
    ):
        fig.add_trace(
            go.Scatter(x=ks, y=[p.get(key) for p in per_k], mode="lines+markers", name=key, line={"color": colour}), row=1, col=col
        )
    fig.add_hline(y=min_fidelity, line_dash="dot", line_color="#2a9d8f", row=1, col=2)
    if chosen is not None:
        for col in (1, 2):
            fig.add_vline(x=chosen, line_dash="dash", line_color="#264653", row=1, col=col)
    fig.update_xaxes(title_text="k", dtick=1)
    fig.update_yaxes(title_text="relative error", rangemode="tozero", row=1, col=1)
    measured = [p[key] for p in per_k for key in ("fidelity", "seed stability") if p.get(key) is not None]
    fig.update_yaxes(range=[min([min_fidelity - 0.05, *measured]) - 0.02, 1.01], row=1, col=2)
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig
