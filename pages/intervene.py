"""Intervene: switch prototypes off or scale them, on one photo and on the whole held-out split; select
prototypes of many classes at once in one table, name them, and take the repaired model out of the app.

Contributions are linear in the pooled features, so every change here is computed from cached
contributions (an st.fragment that never reruns the backbone). The intervention is one scale per prototype
of the run, kept in the session: the per-class switches and sliders and the table edit the same numbers.
"Leave out where this part is" is the other kind of edit (``space_edit``): it changes which cells of the photo are
pooled, so it reads the photos' per-cell features, which the page holds already.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from pages.common import cache, figures, navigation
from pages.common.edit_views import class_accuracy_rows, describe_scale, group_rows, groups_of, top_logit_rows
from pages.common.edits import current_scale, edit_key, reset_all, setting_keys
from pages.common.heldout import HeldOut, held_out_controls, held_out_features
from pages.common.pickers import Picked, image_picker
from pages.common.prototype_table import prototype_table_section
from pages.common.run_context import Context, require_run, run_data
from pages.common.shortcut_demo import groups_table, shortcut_demo_offer
from pages.common.sidebar import select_run
from pages.common.space_edit import current_spatial, masked_photo, photo_pooling, space_toggle, split_edited_pooling
from pages.common.state import kept, workspace
from pages.common.viewmodels import default_class
from protolib import charts
from protolib.evaluation import intervention as evaluation
from protolib.evaluation.intervention import intervention_effect, oracle_intervention, prototype_importance
from protolib.evaluation.metrics import among_decomposed
from protolib.export import exported_bytes, model_from_run
from protolib.runs import RunError, load_run, save_run
from protolib.runs.names import safe_name


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
        names = ctx.run.label_grid()[c]
        with st.container(border=True):
            in_space = "" if spaced is None else f" · {float(spaced[0, c].sum() + ctx.head.bias[label]):.2f} pooling the kept cells"
            st.markdown(f"**{figures.md(ctx.labels[label])}** · logit {float(photo.original[label]):.2f} on this photo{in_space}")
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
    image_col.image(photo.picked.shown if space is None else masked_photo(photo.picked.shown, space[1]), width="stretch")
    if space is not None:
        pooling, cells = space
        kept_all = " (every cell would go: the photo keeps them all)" if bool(pooling.all_left_out[0]) else ""
        image_col.caption(
            f"Pooling: {int(cells.sum())} of {cells.numel()} cells left out (hatched){kept_all} · logit {float(edited[label]):.4f}"
        )
    change = float(edited[label] - original[label])
    logit_col.metric(
        f"Logit of “{figures.md(ctx.labels[label])}”", f"{float(edited[label]):.2f}", delta=f"{change:+.2f}" if change else None
    )
    with predicted_col:
        st.markdown(
            f"<small>Predicted class</small><br><span style='font-size:1.5rem'>{figures.md(ctx.labels[new_predicted])}</span>",
            unsafe_allow_html=True,
        )
        if new_predicted != photo.predicted:
            st.badge(f"changed from {figures.md(ctx.labels[photo.predicted])}", icon=":material/swap_horiz:", color="orange")
        else:
            st.badge("unchanged", icon=":material/check:", color="gray")
    rows = top_logit_rows(ctx.labels, original, edited, 5, ctx.decomposed, include=labels)
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
    shown = list(dict.fromkeys([r["class"] for r in rows] + [ctx.labels[int(c)] for c in top]))
    index = {name: i for i, name in enumerate(ctx.labels)}
    st.plotly_chart(
        charts.logit_bars(shown, [float(original[index[n]]) for n in shown], [float(edited[index[n]]) for n in shown]),
        width="stretch",
        config=figures.PLAIN,
    )


# -- the held-out split --------------------------------------------------------------------------
def held_out_section(ctx: Context, scale: torch.Tensor, labels: list[int], summary, spatial=None) -> None:
    """The same intervention on the held-out photos: accuracy (overall, per class and, when the data folder
    has groups.csv, per group), each prototype's importance, and the oracle experiment. ``summary``: a place
    beside the table for one line of the same figures."""
    st.markdown("##### The same intervention on the held-out split")
    held_out = held_out_controls(ctx)
    sf = held_out_features(ctx, held_out, compute=False)
    if sf is None:
        st.caption("The held-out photos pass through the backbone once; afterwards every change here is instant.")
        if st.button("Compute held-out features", icon=":material/dataset:"):
            sf = held_out_features(ctx, held_out, compute=True)
        if sf is None:
            summary.caption("Compute the held-out features (below) to see what the edit does to accuracy.")
            return
    among = kept(
        st.toggle,
        "Classify among the run's classes only",
        "val_among_run",
        False,
        help="As in the paper, which decomposes every class: the model chooses between the run's classes only. "
        "Otherwise it keeps all its classes, and a mistake towards a class outside the run cannot be undone "
        "by editing the run's prototypes.",
    )
    head, pooled, truth, names = ctx.head, sf.pooled, sf.labels, ctx.labels
    # an edit in space pools each photo's kept cells (from the cached per-cell features)
    spaced = split_edited_pooling(held_out.key(ctx), ctx, sf.matrices, len(sf.paths), spatial) if spatial else sf.pooled
    paths = list(sf.paths)
    if among:
        head, pooled, truth = among_decomposed(ctx.head, sf.pooled, sf.labels)
        spaced = among_decomposed(ctx.head, spaced, sf.labels)[1]
        names = ctx.class_names
        paths = [p for p, label in zip(sf.paths, sf.labels.tolist()) if label in set(ctx.decomposed)]
        if not len(truth):
            st.info("None of these held-out photos belongs to one of the run's classes.")
            return
    key = f"{held_out.key(ctx)}|{among}"
    contributions, before = cache.split_baseline(key, head, pooled)
    spaced_contributions = head.contributions(spaced) if spatial else contributions
    effect = intervention_effect(head, spaced if spatial else pooled, truth, scale, spaced_contributions, before)
    edited = head.logits(spaced if spatial else pooled, spaced_contributions, scale)
    accuracy_metrics(effect, len(truth))
    groups = group_section(held_out, paths, head.logits(pooled, contributions), edited, truth)
    summary_line(summary, effect, groups)
    class_table(class_accuracy_rows(truth, before, edited.argmax(dim=1), names))
    importance_table(ctx, prototype_importance(head, pooled, truth), labels)
    oracle_section(key, head, pooled, truth)


def accuracy_metrics(effect: dict, n_photos: int) -> None:
    before_col, after_col, changed_col = st.columns(3)
    before_col.metric("Top-1 before", f"{100 * effect['top1_before']:.1f} %")
    change = effect["top1_after"] - effect["top1_before"]
    after_col.metric("Top-1 after", f"{100 * effect['top1_after']:.1f} %", delta=f"{100 * change:+.1f} pts" if change else None)
    changed_col.metric("Predictions changed", f"{effect['predictions_changed']} / {n_photos}")


def group_section(
    held_out: HeldOut, paths: list[str], original: torch.Tensor, edited: torch.Tensor, truth: torch.Tensor
) -> tuple[dict, dict] | None:
    """Worst-group accuracy before and after, and every group's, when the data folder has groups.csv; the
    figures (before, after) of ``group_accuracy``, or None."""
    table = groups_table(held_out.data)
    if not table:
        return None
    groups = groups_of(paths, held_out.data, table)
    rows = torch.tensor([g is not None for g in groups], dtype=torch.bool)
    if not bool(rows.any()):
        st.caption("groups.csv lists none of these held-out photos: no accuracy per group.")
        return None
    listed = [g for g in groups if g is not None]
    before = evaluation.group_accuracy(original[rows], truth[rows], listed)
    after = evaluation.group_accuracy(edited[rows], truth[rows], listed)
    before_col, after_col, groups_col = st.columns(3)
    before_col.metric("Worst group before", f"{100 * before['worst_group']:.1f} %")
    change = after["worst_group"] - before["worst_group"]
    after_col.metric(
        "Worst group after", f"{100 * after['worst_group']:.1f} %", delta=f"{100 * change:+.1f} pts" if change else None
    )
    groups_col.metric("Groups", f"{len(after['per_group'])} · {int(rows.sum())} photos")
    percent = {c: st.column_config.NumberColumn(format="%.1f %%") for c in ("before", "after")}
    with st.expander("Accuracy per group (groups.csv)"):
        st.dataframe(
            pd.DataFrame(group_rows(before, after)).assign(
                before=lambda d: 100 * d["before"], after=lambda d: 100 * d["after"], change=lambda d: 100 * d["change"]
            ),
            hide_index=True,
            width="stretch",
            column_config={**percent, "change": st.column_config.NumberColumn(format="%+.1f pts")},
        )
    return before, after


def summary_line(summary, effect: dict, groups: tuple[dict, dict] | None) -> None:
    """One line beside the table: held-out top-1 (and worst group) before → after the edit."""
    text = f"**Held-out top-1** {100 * effect['top1_before']:.1f} % → **{100 * effect['top1_after']:.1f} %**"
    if groups:
        text += f" · **worst group** {100 * groups[0]['worst_group']:.1f} % → **{100 * groups[1]['worst_group']:.1f} %**"
    summary.markdown(text)


def class_table(rows: list[dict]) -> None:
    """Top-1 per held-out class before and after the edit (the classes that changed most first)."""
    st.markdown("**Accuracy per class**")
    table = pd.DataFrame(rows)
    for column in ("before", "after", "change"):
        table[column] = 100 * table[column]
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=min(36 * (len(rows) + 1) + 3, 320),
        column_config={
            "before": st.column_config.NumberColumn(format="%.1f %%"),
            "after": st.column_config.NumberColumn(format="%.1f %%"),
            "change": st.column_config.NumberColumn(format="%+.1f pts"),
        },
    )


def importance_table(ctx: Context, importance: torch.Tensor, labels: list[int]) -> None:
    """Top-1 drop on the split when each prototype alone is switched off."""
    k = ctx.run.k
    rows = []
    for label in labels:
        c = ctx.decomposed.index(label)
        rows.append({"class": ctx.labels[label], **{f"P{i + 1}": 100 * float(importance[c, i]) for i in range(k)}})
    st.markdown("**Importance of each prototype** (top-1 drop on this split when it alone is switched off)")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={f"P{i + 1}": st.column_config.NumberColumn(format="%+.1f pts") for i in range(k)},
    )


def oracle_section(key: str, head, pooled: torch.Tensor, truth: torch.Tensor) -> None:
    st.markdown("##### Oracle experiment (the paper's Table 4)")
    st.caption(
        "In every wrong prediction whose predicted class was decomposed, zero that class's most important "
        "prototype for that photo only: how much could a perfect human-in-the-loop fix?"
    )
    oracle_key = f"oracle.{key}"
    if st.button("Run the oracle", icon=":material/science:"):
        st.session_state[oracle_key] = oracle_intervention(head, pooled, truth)
    oracle = st.session_state.get(oracle_key)
    if oracle:
        before_col, after_col, photos_col = st.columns(3)
        before_col.metric("Top-1 before", f"{100 * oracle['top1_before']:.1f} %")
        after_col.metric(
            "Top-1 with the oracle",
            f"{100 * oracle['top1_after']:.1f} %",
            delta=f"{100 * (oracle['top1_after'] - oracle['top1_before']):+.1f} pts",
        )
        photos_col.metric("Photos intervened on", oracle["intervened_images"])


# -- saving and leaving the app ---------------------------------------------------------------------------
def save_section(ctx: Context, scale: torch.Tensor, spatial=None) -> None:
    """The edited head (and the edit in space, a change of the pooling) saved as a new run, which can then be
    opened, and downloaded as a model that runs without this app (TorchScript: ``torch.jit.load``)."""
    state = st.session_state
    st.markdown("##### Save the edited model")
    note = describe_scale(scale, ctx.class_names)
    space_note = spatial.describe(ctx.labels) if spatial else "no change"
    name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    with name_col:
        name = kept(st.text_input, "New run name", f"iv_name.{ctx.key}", f"{ctx.name}-edited")
    with button_col:
        unchanged = note == "no change" and spatial == ctx.run.spatial_edit
        clicked = st.button("Save as a new run", icon=":material/save:", disabled=unchanged, width="stretch")
    st.caption(f"Intervention: {figures.md(note)}" + (" · the prototypes' labels go with it" if ctx.run.labels else ""))
    if spatial or ctx.run.spatial_edit:
        st.caption(f"Edit in space (the model's pooling, not its head): {figures.md(space_note)}")
    if clicked:
        ws = workspace()
        try:
            edited = ctx.run.with_scale(scale, note).with_spatial_edit(spatial, space_note)
            path = save_run(edited, ws.new_run_path(name))
        except (RunError, ValueError, OSError) as exc:
            st.error(ws.redact(f"Could not save: {exc}"))
            return
        state["iv_saved"], state["iv_saved_path"] = path.name, str(path)
    if state.get("iv_saved"):
        saved = state["iv_saved"]
        st.success(f"Saved as run “{saved}”.", icon=":material/check_circle:")
        open_col, download_col = st.columns(2)
        if open_col.button(f"Open “{saved}”"):
            state.pop("iv_saved")
            select_run(saved)
            st.rerun(scope="app")
        download_col.download_button(
            "Download the model (TorchScript)",
            data=exporter(state["iv_saved_path"], ctx),
            file_name=f"{safe_name(saved)}.pt",
            mime="application/octet-stream",
            icon=":material/download:",
            on_click="ignore",
            key=f"iv_download.{edit_key(Path(state['iv_saved_path']))}",
            help='The backbone and the edited prototype head in one file: torch.jit.load("model.pt")(images) '
            "gives the logits, with no protoscope installed (class names, labels and preprocessing inside).",
        )


def exporter(path: str, ctx: Context):
    """The download's data, made when the button is clicked: the saved run exported on the run's model."""
    backbone = ctx.backbone

    def make() -> bytes:
        return exported_bytes(model_from_run(load_run(path, backbone), backbone))

    return make


@st.fragment
def live(ctx: Context, photo: Photo, data: str) -> None:
    """Everything that follows the controls; redraws alone when they change."""
    labels = kept(
        st.multiselect,
        "Classes to edit",
        f"iv_classes.{photo.picked.key}",
        [photo.first],
        options=ctx.decomposed,
        format_func=lambda c: ctx.labels[c] + ("  (predicted)" if c == photo.predicted else ""),
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
