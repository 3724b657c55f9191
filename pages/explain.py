"""Explain: one photo, its top classes, and a class's logit as the sum of its prototypes' contributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from pages.common import figures, navigation
from pages.common.figures import part_map_note
from pages.common.pickers import Picked, image_picker
from pages.common.run_context import Context, require_run
from pages.common.state import kept
from pages.common.viewmodels import default_class
from protolib import charts
from protolib.explain import Explanation, explain_features, heatmap_overlay, left_out_overlay, part_map


def top_classes(ctx: Context, logits: torch.Tensor) -> None:
    """The five most probable classes, those of the run marked ✓."""
    decomposed = set(ctx.decomposed)
    top = logits.softmax(dim=0).topk(min(5, len(logits)))
    st.markdown("##### Top-5 classes")
    st.dataframe(
        pd.DataFrame(
            {
                "class": [ctx.backbone.class_names[int(c)] for c in top.indices],
                "probability": [float(p) for p in top.values],
                "logit": [float(logits[int(c)]) for c in top.indices],
                "decomposed": ["✓" if int(c) in decomposed else "" for c in top.indices],
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
            "logit": st.column_config.NumberColumn(format="%.2f"),
            "decomposed": st.column_config.TextColumn(help="✓: the run has prototypes for this class"),
        },
    )


def class_to_explain(ctx: Context, picked: Picked, logits: torch.Tensor) -> int:
    """The predicted class when the run decomposed it, else the best decomposed one; the user may pick another."""
    predicted, first = default_class(logits, ctx.decomposed)
    if predicted != first:
        st.info(
            f"The predicted class “{figures.md(ctx.backbone.class_names[predicted])}” was not decomposed in this run; "
            "showing the highest-scoring decomposed class instead."
        )
    return kept(
        st.selectbox,
        "Class to explain",
        f"explain_class.{picked.key}",
        first,
        options=ctx.decomposed,
        format_func=lambda c: ctx.backbone.class_names[c] + ("  (predicted)" if c == predicted else ""),
    )


def prototype_names(ctx: Context, label: int) -> list[str]:
    """The names people gave the prototypes of class ``label`` ("" when unnamed)."""
    return ctx.run.prototype_name_grid()[ctx.decomposed.index(label)]


def contributions_and_part_map(ctx: Context, e: Explanation) -> None:
    k = len(e.contributions)
    names = prototype_names(ctx, e.label)
    chart_col, map_col = st.columns([3, 2], gap="large")
    with chart_col:
        st.plotly_chart(
            charts.waterfall(
                e.contributions, e.bias, f"“{ctx.backbone.class_names[e.label]}”: logit {e.logit:.2f} = bias + prototypes", names
            ),
            width="stretch",
            config=figures.PLAIN,
        )
    with map_col:
        st.markdown(f"##### Part map of “{figures.md(ctx.backbone.class_names[e.label])}”")
        st.image(part_map(e.presence, e.image), caption=part_map_note(ctx.head.presence_damping), width="stretch")
        figures.legend(k, names=names)


def drawn(e: Explanation, image: np.ndarray) -> np.ndarray:
    """The image with the cells the run's edit in space leaves out of the pooling hatched (as Intervene draws them)."""
    return image if e.left_out is None else left_out_overlay(image, e.left_out)


def heatmaps(e: Explanation, names: list[str]) -> None:
    """Each prototype's heatmap on the photo, with its contribution (and its name, ``names``, when it has one)."""
    k = len(e.contributions)
    st.markdown("##### Each prototype's heatmap")
    st.caption(
        "Bright: the place adds to the logit; dark: it takes away. Its mean is the contribution"
        + (" (over the cells that are not hatched: the hatched ones are left out of the pooling)." if e.spatial else ".")
    )
    per_row = min(max(k, 4), 5)
    for start in range(0, k, per_row):
        for i, col in zip(range(start, start + per_row), st.columns(per_row)):
            if i < k:
                with col:
                    st.image(drawn(e, heatmap_overlay(e.heatmaps[i], e.image)), width="stretch")
                    title = figures.md(charts.prototype_title(i, names[i]))
                    st.markdown(figures.chip(i, f"{title}: <b>{float(e.contributions[i]):+.2f}</b>"), unsafe_allow_html=True)


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Explain")
st.caption(
    "The prototype network's logit for a class is the bias plus one contribution per prototype; each contribution "
    "is the mean of that prototype's heatmap over the photo."
)
ctx = require_run()
picked = image_picker(ctx)
if picked is None:
    st.stop()
spatial = ctx.run.spatial_edit  # the run's model as it is: its edit in space included
predicted = explain_features(ctx.head, picked.feats, picked.shown, None, spatial)
image_col, top_col = st.columns([1, 2], gap="large")
with image_col:
    st.image(drawn(predicted, picked.shown), caption=f"{figures.md(picked.name)} (as the model sees it)", width="stretch")
    if spatial:
        st.caption(figures.md(predicted.space_note(ctx.backbone.class_names)))
with top_col:
    top_classes(ctx, predicted.logits)
    label = class_to_explain(ctx, picked, predicted.logits)
explanation = predicted if label == predicted.label else explain_features(ctx.head, picked.feats, picked.shown, label, spatial)
st.divider()
contributions_and_part_map(ctx, explanation)
heatmaps(explanation, prototype_names(ctx, label))
