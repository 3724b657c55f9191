"""Intervene: switch prototypes off or scale them, on one photo and on the whole held-out split; select
prototypes of many classes at once in one table, name them, and take the repaired model out of the app.

Contributions are linear in the pooled features, so every change here is computed from cached
contributions (an st.fragment that never reruns the backbone). The intervention is one scale per prototype
of the run, kept in the session: the per-class switches and sliders and the table edit the same numbers.
"Leave out where this part is" is the other kind of edit (``space_edit``): it changes which cells of the photo are
pooled, so it reads the photos' per-cell features, which the page holds already.

Read from the bottom: the page is the short script there, and ``live`` the fragment that follows the controls.
The held-out section is ``common/heldout_effect.py``; saving and the download, ``common/save_edit.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from pages.common import figures, navigation
from pages.common.edit_views import top_logit_rows
from pages.common.edits import current_scale, reset_all, setting_keys
from pages.common.heldout_effect import held_out_section
from pages.common.pickers import Picked, image_picker
from pages.common.prototype_table import prototype_table_section
from pages.common.run_context import Context, require_run, run_data
from pages.common.save_edit import save_section
from pages.common.shortcut_demo import shortcut_demo_offer
from pages.common.space_edit import current_spatial, photo_pooling, space_toggle
from pages.common.state import kept
from pages.common.viewmodels import default_class
from protolib import charts
from protolib.explain import left_out_overlay


@dataclass
class Photo:
    """One photo's numbers: all an intervention needs (no backbone run after this)."""

    picked: Picked
    pooled: torch.Tensor  # (1, D)
    contributions: torch.Tensor  # (1, C, k)
    original: torch.Tensor  # (C_all,) logits before any edit
    predicted: int
    first: int  # the class edited first: the prediction when decomposed, else the best decomposed class


def photo_numbers(ctx: Context, picked: Picked) -> Photo:
    pooled = picked.feats.mean(dim=(0, 1)).unsqueeze(0)
    contributions = ctx.head.contributions(pooled)
    original = ctx.head.logits(pooled, contributions)[0]
    predicted, first = default_class(original, ctx.decomposed)
    return Photo(picked, pooled, contributions, original, predicted, first)


def controls(ctx: Context, photo: Photo, labels: list[int], spaced: torch.Tensor | None = None) -> None:
    """A switch and a scale slider per prototype of each class being edited, and its edit in space;
    ``spaced`` (1, C, k): the contributions under the edit in space, shown instead of the photo's."""
    contributions = photo.contributions if spaced is None else spaced
    for label in labels:
        c = ctx.decomposed.index(label)
        names = ctx.run.prototype_name_grid()[c]
        with st.container(border=True):
            in_space = "" if spaced is None else f" · {float(spaced[0, c].sum() + ctx.head.bias[label]):.2f} pooling the kept cells"
            shown = figures.md(ctx.backbone.class_names[label])
            st.markdown(f"**{shown}** · logit {float(photo.original[label]):.2f} on this photo{in_space}")
            for i in range(ctx.run.k):
                on_key, scale_key = setting_keys(ctx, label, i)
                chip_col, on_col, scale_col = st.columns([3, 1, 3], vertical_alignment="center")
                with chip_col:
                    st.markdown(
                        figures.chip(i, f"<b>{figures.md(charts.prototype_title(i, names[i]))}</b>")
                        + f"<br><small>contribution&nbsp;<b>{float(contributions[0, c, i]):+.2f}</b></small>"
                        + f"<br><small>α&nbsp;{float(ctx.run.alpha[c, i]):+.3g}</small>",
                        unsafe_allow_html=True,
                    )
                with on_col:
                    on = kept(st.toggle, f"P{i + 1} on", on_key, True, label_visibility="collapsed")
                with scale_col:
                    kept(
                        st.slider,
                        f"Scale of P{i + 1}",
                        scale_key,
                        1.0,
                        min_value=0.0,
                        max_value=2.0,
                        step=0.05,
                        disabled=not on,
                        label_visibility="collapsed",
                    )
                space_toggle(ctx, label, i)


# -- this photo ----------------------------------------------------------------------------------
def photo_results(ctx: Context, photo: Photo, edited: torch.Tensor, labels: list[int], space=None) -> None:
    """The edited logit and prediction, and the top classes before and after; ``space``: (the edited pooling,
    its left-out cells) under an edit in space, drawn on the photo."""
    label, original = labels[0], photo.original
    new_predicted = int(edited.argmax())
    image_col, logit_col, predicted_col = st.columns([1, 1.2, 1.6], vertical_alignment="center")
    image_col.image(photo.picked.shown if space is None else left_out_overlay(photo.picked.shown, space[1]), width="stretch")
    if space is not None:
        pooling, cells = space
        kept_all = " (every cell would go: the photo keeps them all)" if bool(pooling.all_left_out[0]) else ""
        image_col.caption(
            f"Pooling: {int(cells.sum())} of {cells.numel()} cells left out (hatched){kept_all} · logit {float(edited[label]):.4f}"
        )
    change = float(edited[label] - original[label])
    logit_col.metric(
        f"Logit of “{figures.md(ctx.backbone.class_names[label])}”",
        f"{float(edited[label]):.2f}",
        delta=f"{change:+.2f}" if change else None,
    )
    with predicted_col:
        st.markdown(
            "<small>Predicted class</small><br><span style='font-size:1.5rem'>"
            f"{figures.md(ctx.backbone.class_names[new_predicted])}</span>",
            unsafe_allow_html=True,
        )
        if new_predicted != photo.predicted:
            st.badge(
                f"changed from {figures.md(ctx.backbone.class_names[photo.predicted])}",
                icon=":material/swap_horiz:",
                color="orange",
            )
        else:
            st.badge("unchanged", icon=":material/check:", color="gray")
    rows = top_logit_rows(ctx.backbone.class_names, original, edited, 5, ctx.decomposed, include=labels)
    table = pd.DataFrame(rows)[["rank", "class", "logit", "original logit", "change", "probability"]]

    def highlight(row):
        colour = "background-color: rgba(231,111,81,.18)" if abs(row["change"]) > 1e-9 else ""
        return [colour] * len(row)

    st.dataframe(
        table.style.apply(highlight, axis=1).format(
            {"logit": "{:.2f}", "original logit": "{:.2f}", "change": "{:+.2f}", "probability": "{:.1%}"}
        ),
        hide_index=True,
        width="stretch",
    )
    top = original.topk(min(5, len(original))).indices
    shown = list(dict.fromkeys([r["class"] for r in rows] + [ctx.backbone.class_names[int(c)] for c in top]))
    index = {name: i for i, name in enumerate(ctx.backbone.class_names)}
    st.plotly_chart(
        charts.logit_bars(shown, [float(original[index[n]]) for n in shown], [float(edited[index[n]]) for n in shown]),
        width="stretch",
        config=figures.PLAIN,
    )


@st.fragment
def live(ctx: Context, photo: Photo, data: str) -> None:
    """Everything that follows the controls; redraws alone when they change."""
    labels = kept(
        st.multiselect,
        "Classes to edit",
        f"iv_classes.{photo.picked.key}",
        [photo.first],
        options=ctx.decomposed,
        format_func=lambda c: ctx.backbone.class_names[c] + ("  (predicted)" if c == photo.predicted else ""),
    )
    scale = current_scale(ctx)
    spatial = current_spatial(ctx)
    space = photo_pooling(ctx, photo.picked.feats, spatial) if spatial else None
    pooled = space[0].pooled if space else photo.pooled
    contributions = ctx.head.contributions(pooled) if space else photo.contributions
    left, right = st.columns([5, 6], gap="large")
    with left:
        st.markdown("##### Prototypes: on/off and scale")
        if labels:
            controls(ctx, photo, labels, contributions if space else None)
        else:
            st.info("Choose a decomposed class to edit its prototypes here, or use the table below.")
        st.button("Reset all", icon=":material/restart_alt:", on_click=reset_all, args=(ctx,))
    edited = ctx.head.logits(pooled, contributions, scale)[0]
    with right:
        st.markdown("##### This photo")
        photo_results(ctx, photo, edited, labels or [photo.first], space)
    st.divider()
    prototype_table_section(ctx, scale, data)
    summary = st.empty()
    st.divider()
    held_out_section(ctx, scale, labels, summary, spatial)
    st.divider()
    save_section(ctx, scale, spatial)


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Intervene")
st.caption(
    "Switch a prototype off (or scale it) and the class's logit loses that part's contribution: a test-time "
    "edit of the model that needs no retraining and no second pass through the backbone. Or leave out where a part "
    "is: an edit of the model's computation (the cells where the part is present are left out of the pooling)."
)
shortcut_demo_offer()
ctx = require_run()
picked = image_picker(ctx)
if picked is None:
    st.stop()
live(ctx, photo_numbers(ctx, picked), run_data(ctx)[0])
