"""Intervene: switch prototypes off or scale them, on one photo and on the whole held-out split; select
prototypes of many classes at once in one table, name them, and take the repaired model out of the app.

Contributions are linear in the pooled features, so every change here is computed from cached
contributions (an st.fragment that never reruns the backbone). The intervention is one scale per prototype
of the run, kept in the session: the per-class switches and sliders and the table edit the same numbers.
"""

from __future__ import annotations

import hashlib
import html
import importlib
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from pages.common import cache, figures, jobs, navigation, viewmodels
from pages.common.heldout import HeldOut, held_out_controls, held_out_features
from pages.common.pickers import Picked, image_picker
from pages.common.run_context import Context, require_run, run_class_features
from pages.common.sidebar import select_run, select_run_path
from pages.common.state import data_dir, kept, workspace
from pages.common.viewmodels import (
    LABEL,
    SELECT,
    class_accuracy_rows,
    default_class,
    describe_scale,
    group_rows,
    groups_of,
    label_changes,
    labels_after,
    merge_table_edits,
    prototype_name,
    prototype_table,
    scale_matrix,
    top_logit_rows,
)
from protolib.backbones import BackboneError
from protolib.data import DataError
from protolib.data.features import extract_features
from protolib.evaluation import intervention as evaluation
from protolib.evaluation.intervention import intervention_effect, oracle_intervention, prototype_importance
from protolib.evaluation.metrics import among_decomposed
from protolib.explain import heatmap_overlay, prototype_hex, upsample
from protolib.export import exported_bytes, model_from_run
from protolib.runs import RunError, load_run, safe_name, save_run

SHORTCUT = "protolib.benchmarks.shortcut"
SHARE_CLASSES = 64  # the table measures shares of the logit for runs of at most this many classes
TOP_PHOTOS, TOP_PROTOTYPES = 4, 6  # top photos per selected prototype, and how many prototypes show them


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


# -- the intervention, kept in the session ----------------------------------------------------------
def edit_key(path: Path | None) -> str:
    """Names a run's edits in session keys: its folder only, so that saving its labels (a new version of the
    same run) keeps the edits; a digest, since widget keys reach the browser."""
    return hashlib.sha256(f"edit|{path}".encode()).hexdigest()[:16]


def setting_keys(ctx: Context, label: int, i: int) -> tuple[str, str]:
    """The session keys of prototype ``i`` of class ``label``: switched on, and its scale."""
    edit = edit_key(ctx.run.path)
    return f"iv.{edit}.{label}.{i}.on", f"iv.{edit}.{label}.{i}.scale"


def reset_all(ctx: Context) -> None:
    set_scales(ctx, [(c, i) for c in range(len(ctx.decomposed)) for i in range(ctx.run.k)], 1.0)


def set_scales(ctx: Context, targets, value: float) -> None:
    """Scale the prototypes ``targets`` ((class position, prototype) pairs) to ``value``: 0 switches them off
    (their sliders keep their value for when they are switched back on)."""
    state = st.session_state
    for c, i in targets:
        on, scale = setting_keys(ctx, ctx.decomposed[c], i)
        state[on] = value != 0
        if value != 0:
            state[scale] = float(value)


def current_scale(ctx: Context) -> torch.Tensor:
    """The (C, k) intervention on every class of the run, as the switches, sliders and the table set it."""
    state = st.session_state
    settings = {}
    for c, label in enumerate(ctx.decomposed):
        for i in range(ctx.run.k):
            on, scale = setting_keys(ctx, label, i)
            value = float(state.get(scale, 1.0)) if state.get(on, True) else 0.0
            if value != 1.0:
                settings[(c, i)] = value
    return scale_matrix(len(ctx.decomposed), ctx.run.k, settings)


def controls(ctx: Context, photo: Photo, labels: list[int]) -> None:
    """A switch and a scale slider per prototype of each class being edited."""
    for label in labels:
        c = ctx.decomposed.index(label)
        names = ctx.run.label_grid()[c]
        with st.container(border=True):
            st.markdown(f"**{ctx.labels[label]}** · logit {float(photo.original[label]):.2f} on this photo")
            for i in range(ctx.run.k):
                on_key, scale_key = setting_keys(ctx, label, i)
                chip_col, on_col, scale_col = st.columns([3, 1, 3], vertical_alignment="center")
                with chip_col:
                    st.markdown(
                        figures.chip(i, f"<b>{html.escape(figures.prototype_title(i, names[i]))}</b>")
                        + f"<br><small>contribution&nbsp;<b>{float(photo.contributions[0, c, i]):+.2f}</b></small>"
                        + f"<br><small>α&nbsp;{float(ctx.run.alpha[c, i]):+.3g}</small>",
                        unsafe_allow_html=True,
                    )
                with on_col:
                    on = kept(st.toggle, f"P{i + 1} on", on_key, True, label_visibility="collapsed")
                with scale_col:
                    kept(
                        st.slider, f"Scale of P{i + 1}", scale_key, 1.0, min_value=0.0, max_value=2.0, step=0.05,
                        disabled=not on, label_visibility="collapsed",
                    )


# -- this photo ----------------------------------------------------------------------------------
def photo_results(ctx: Context, photo: Photo, edited: torch.Tensor, labels: list[int]) -> None:
    """The edited logit and prediction, and the top classes before and after."""
    label, original = labels[0], photo.original
    new_predicted = int(edited.argmax())
    image_col, logit_col, predicted_col = st.columns([1, 1.2, 1.6], vertical_alignment="center")
    image_col.image(photo.picked.shown, width="stretch")
    change = float(edited[label] - original[label])
    logit_col.metric(f"Logit of “{ctx.labels[label]}”", f"{float(edited[label]):.2f}", delta=f"{change:+.2f}" if change else None)
    with predicted_col:
        st.markdown(
            f"<small>Predicted class</small><br><span style='font-size:1.5rem'>{ctx.labels[new_predicted]}</span>",
            unsafe_allow_html=True,
        )
        if new_predicted != photo.predicted:
            st.badge(f"changed from {ctx.labels[photo.predicted]}", icon=":material/swap_horiz:", color="orange")
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
    shown = list(dict.fromkeys([r["class"] for r in rows] + [ctx.labels[int(c)] for c in original.topk(5).indices]))
    index = {name: i for i, name in enumerate(ctx.labels)}
    st.plotly_chart(
        figures.logit_bars(shown, [float(original[index[n]]) for n in shown], [float(edited[index[n]]) for n in shown]),
        width="stretch", config=figures.PLAIN,
    )


# -- every prototype of the run in one table ----------------------------------------------------------
def selection_key(ctx: Context) -> str:
    return f"iv_sel.{edit_key(ctx.run.path)}"


def pending_key(ctx: Context) -> str:
    """The session key of the labels typed in the table and not saved yet."""
    return f"iv_pending.{edit_key(ctx.run.path)}"


def editor_key(ctx: Context) -> str:
    """The table's widget key: a new one (a fresh table) whenever the page changes the selection itself."""
    edit = edit_key(ctx.run.path)
    return f"iv_table.{edit}.{st.session_state.get(f'iv_gen.{edit}', 0)}"


def selected(ctx: Context) -> set[tuple[int, int]]:
    """The selected prototypes, as (class position, prototype) pairs."""
    return set(st.session_state.get(selection_key(ctx), set()))


def renew_table(ctx: Context) -> None:
    gen = f"iv_gen.{edit_key(ctx.run.path)}"
    st.session_state[gen] = st.session_state.get(gen, 0) + 1


def table_edited(ctx: Context, key: str) -> None:
    """The table's edits (ticks and labels) into the session's selection and unsaved labels."""
    state = st.session_state
    edits = (state.get(key) or {}).get("edited_rows", {})
    chosen, pending = merge_table_edits(
        edits, ctx.run.k, len(ctx.decomposed) * ctx.run.k, selected(ctx), state.get(pending_key(ctx), {})
    )
    state[selection_key(ctx)], state[pending_key(ctx)] = chosen, pending


def clear_selection(ctx: Context) -> None:
    st.session_state[selection_key(ctx)] = set()
    renew_table(ctx)


@st.cache_data(max_entries=8, show_spinner="Measuring each prototype's share of its class's logit…")
def logit_shares(key: str, _ctx: Context) -> np.ndarray | None:
    """(C, k) each prototype's share of its class's logit (|mean contribution| over the class's training
    photos, from the feature cache), NaN where the photos are gone; None for runs of many classes."""
    run = _ctx.run
    if len(run.classes) > SHARE_CLASSES:
        return None
    shares = np.full((len(run.classes), run.k), np.nan, dtype=np.float32)
    for c, entry in enumerate(run.manifest["classes"]):
        paths = [p for p in run.manifest["images"].get(entry["folder"], []) if Path(p).is_file()]
        try:
            features = extract_features(_ctx.backbone, paths) if paths else None
        except (DataError, BackboneError, OSError):
            features = None
        if features is not None and len(features.paths):
            mean = _ctx.head.contributions(features.pooled)[:, c, :].mean(dim=0)
            shares[c] = viewmodels.contribution_shares(mean).numpy()
    return shares


@st.cache_data(ttl=60, show_spinner=False)
def groups_table(data: str) -> dict:
    """``data/groups.csv`` (file -> its row: split, class, background, group), {} when there is none."""
    if not data:
        return {}
    from protolib.data.synthetic import read_groups

    try:
        return read_groups(Path(data))
    except (OSError, KeyError, ValueError):
        return {}


def shortcut_module():
    """The shortcut benchmark's module when this installation has it (it draws background prototypes)."""
    if importlib.util.find_spec(SHORTCUT) is None:
        return None
    try:
        return importlib.import_module(SHORTCUT)
    except ImportError:
        return None


@st.cache_data(max_entries=8, show_spinner="Measuring how much of each prototype lies on the background…")
def background_shares(key: str, data: str, _ctx: Context) -> np.ndarray | None:
    """(C, k) the share of each prototype's positive heatmap on the background of a few masked photos of its
    class, when the data folder has object masks (the shortcut benchmark's layout); None otherwise."""
    fractions = getattr(shortcut_module(), "background_fractions", None)
    if fractions is None or not groups_table(data):
        return None
    try:
        return fractions(_ctx.backbone, _ctx.run, data).numpy()
    except (DataError, BackboneError, RunError, OSError, KeyError, ValueError):
        return None


def switch_off_background(ctx: Context, data: str) -> None:
    """Switch off every prototype the shortcut benchmark's mask rule calls background."""
    rule = getattr(shortcut_module(), "mask_rule_scales", None)
    try:
        scales = rule(ctx.backbone, ctx.run, data)
    except (DataError, BackboneError, RunError, OSError, KeyError, ValueError) as exc:
        st.session_state["iv_background_error"] = workspace().redact(f"The background prototypes cannot be found: {exc}")
        return
    st.session_state.pop("iv_background_error", None)
    set_scales(ctx, [tuple(w) for w in (scales == 0).nonzero().tolist()], 0.0)


def prototype_table_section(ctx: Context, scale: torch.Tensor, data: str) -> None:
    """Every prototype of the run, in one table: tick prototypes of any classes and scale them together, and
    name them (the names are saved with the run)."""
    state, k = st.session_state, ctx.run.k
    st.markdown("##### Every prototype of the run")
    st.caption(
        "Tick prototypes of any classes in the first column and scale them together; type a name in **label** "
        "(“beak”, “water”) and save it with the run. The held-out accuracy below follows every change."
    )
    chosen, pending, grid = selected(ctx), state.get(pending_key(ctx), {}), ctx.run.label_grid()
    shares = logit_shares(ctx.key, ctx)
    background = background_shares(ctx.key, data, ctx)
    rows = prototype_table(
        ctx.class_names, k, grid, scale, chosen, pending,
        shares=None if shares is None else torch.from_numpy(shares),
        background=None if background is None else torch.from_numpy(background),
        colours=[prototype_hex(i) for i in range(k)],
    )
    table = pd.DataFrame(rows).replace({np.nan: None})
    config = {
        SELECT: st.column_config.CheckboxColumn("select", width="small"),
        "colour": st.column_config.ImageColumn("colour", width="small"),
        LABEL: st.column_config.TextColumn("label", max_chars=80, help="A short name: what this prototype looks at"),
        "share of the logit": st.column_config.ProgressColumn(
            min_value=0.0, max_value=1.0, format="percent",
            help="|mean contribution| over the class's training photos, as a share of all its prototypes'"),
        "on the background": st.column_config.ProgressColumn(
            min_value=0.0, max_value=1.0, format="percent",
            help="Share of its positive heatmap on the background of masked photos of its class"),
        "scale": st.column_config.TextColumn("scale", help="on, off, or the factor its contribution is scaled by"),
    }
    key = editor_key(ctx)
    st.data_editor(
        table, key=key, on_change=table_edited, args=(ctx, key), hide_index=True, width="stretch", num_rows="fixed",
        disabled=[c for c in table.columns if c not in (SELECT, LABEL)], column_config=config,
        height=min(36 * (len(rows) + 1) + 3, 460),
    )
    selection_controls(ctx, sorted(chosen), grid, background is not None, data)
    label_controls(ctx, grid, pending)


def selection_controls(ctx: Context, chosen: list[tuple[int, int]], grid, background: bool, data: str) -> None:
    names = [prototype_name(ctx.class_names[c], i, grid[c][i]) for c, i in chosen]
    st.caption(f"**{len(chosen)} selected:** " + ", ".join(names) if chosen
               else "Tick prototypes in the first column to select them (any classes).")
    edit = edit_key(ctx.run.path)
    to_col, _ = st.columns([2, 3])
    with to_col:
        value = kept(st.slider, "Scale selected to", f"iv_to.{edit}", 0.0, min_value=0.0, max_value=2.0, step=0.05)
    with st.container(horizontal=True, gap="small"):
        st.button("Apply to selected", on_click=set_scales, args=(ctx, chosen, value), disabled=not chosen,
                  icon=":material/tune:")
        st.button("Switch selected off", on_click=set_scales, args=(ctx, chosen, 0.0), disabled=not chosen,
                  icon=":material/block:")
        st.button("Reset selected", on_click=set_scales, args=(ctx, chosen, 1.0), disabled=not chosen,
                  icon=":material/undo:")
        st.button("Clear selection", on_click=clear_selection, args=(ctx,), disabled=not chosen)
        if background:
            st.button(
                "Switch off every background prototype", on_click=switch_off_background, args=(ctx, data),
                icon=":material/landscape:", type="primary",
                help="Every prototype whose positive heatmap lies mostly on the background of the masked photos of its "
                "class (the shortcut benchmark's mask rule)",
            )
    if st.session_state.get("iv_background_error"):
        st.error(st.session_state["iv_background_error"])
    if chosen and st.checkbox("Show the top photos of the selected prototypes", key=f"iv_top.{edit}"):
        top_photos(ctx, chosen[:TOP_PROTOTYPES], grid)


def top_photos(ctx: Context, chosen: list[tuple[int, int]], grid) -> None:
    """Per selected prototype, the training photos of its class where it moves the logit most, with its heatmap."""
    for c, i in chosen:
        features = run_class_features(ctx, c)
        if features is None:
            continue
        contributions = ctx.head.contributions(features.pooled)[:, c, :]
        order = viewmodels.rank_by_contribution(contributions, i, TOP_PHOTOS)
        heat = ctx.head.heatmaps(features.feats[order], c)[:, i]
        preprocessing = repr(ctx.backbone.preprocessing)
        images = [cache.shown_image(features.paths[j], preprocessing, ctx.backbone) for j in order]
        st.markdown(figures.chip(i, html.escape(prototype_name(ctx.class_names[c], i, grid[c][i]))), unsafe_allow_html=True)
        for col, j, h, img in zip(st.columns(TOP_PHOTOS), order, heat, images):
            col.image(heatmap_overlay(upsample(h, img.shape[:2]), img), caption=f"contribution {float(contributions[j, i]):+.2f}",
                      width="stretch")


def label_controls(ctx: Context, grid, pending: dict) -> None:
    """Save the names typed in the table (a new version of the run; a published run is copied first)."""
    changes = label_changes(grid, pending)
    if st.session_state.get("iv_label_note"):
        st.success(st.session_state.pop("iv_label_note"), icon=":material/sell:")
    if not changes:
        return
    owned = workspace().owns(ctx.run.path)
    where = "with this run" if owned else "in your own copy of this published run"
    if st.button(f"Save {len(changes)} label{'s' if len(changes) > 1 else ''} {where}", type="primary",
                 icon=":material/sell:"):
        try:
            path = save_labels(ctx, labels_after(grid, ctx.decomposed, pending), owned)
        except (RunError, ValueError, OSError) as exc:
            st.error(workspace().redact(f"The labels could not be saved: {exc}"))
            return
        st.session_state["iv_label_note"] = f"Labels saved with run “{path.name}”."
        st.rerun(scope="app")


def save_labels(ctx: Context, labels: dict, owned: bool) -> Path:
    """Write the run again with ``labels`` (atomically: a reader sees the old version or the new one). A
    published run is read-only: the labelled run becomes the session's own copy, which it then shows."""
    run = ctx.run.with_labels(labels)
    old = edit_key(ctx.run.path)
    if owned:
        path = save_run(run, ctx.run.path, overwrite=True)
    else:
        run.manifest = dict(run.manifest, parent=ctx.name)
        path = save_run(run, workspace().new_run_path(f"{ctx.name}-labelled"))
        carry_edits(old, edit_key(path))
        select_run_path(path)
    st.session_state.pop(f"iv_pending.{edit_key(path)}", None)
    st.session_state.pop(f"iv_pending.{old}", None)
    gen = f"iv_gen.{edit_key(path)}"
    st.session_state[gen] = st.session_state.get(gen, 0) + 1
    return path


def carry_edits(old: str, new: str) -> None:
    """The session's edits of one run (switches, scales, selection) carried over to its labelled copy."""
    state = st.session_state
    for key in [k for k in state if isinstance(k, str)]:
        for prefix in ("iv.", "iv_sel.", "iv_to."):
            if key.startswith(f"{prefix}{old}"):
                state[f"{prefix}{new}{key[len(prefix) + len(old):]}"] = state[key]


# -- the held-out split --------------------------------------------------------------------------
def held_out_section(ctx: Context, scale: torch.Tensor, labels: list[int], summary) -> None:
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
        st.toggle, "Classify among the run's classes only", "val_among_run", False,
        help="As in the paper, which decomposes every class: the model chooses between the run's classes only. "
        "Otherwise it keeps all its classes, and a mistake towards a class outside the run cannot be undone "
        "by editing the run's prototypes.",
    )
    head, pooled, truth, names = ctx.head, sf.pooled, sf.labels, ctx.labels
    paths = list(sf.paths)
    if among:
        head, pooled, truth = among_decomposed(ctx.head, sf.pooled, sf.labels)
        names = ctx.class_names
        paths = [p for p, label in zip(sf.paths, sf.labels.tolist()) if label in set(ctx.decomposed)]
        if not len(truth):
            st.info("None of these held-out photos belongs to one of the run's classes.")
            return
    key = f"{held_out.key(ctx)}|{among}"
    contributions, before = cache.split_baseline(key, head, pooled)
    effect = intervention_effect(head, pooled, truth, scale, contributions, before)
    edited = head.logits(pooled, contributions, scale)
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


def group_section(held_out: HeldOut, paths: list[str], original: torch.Tensor, edited: torch.Tensor,
                  truth: torch.Tensor) -> tuple[dict, dict] | None:
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
    after_col.metric("Worst group after", f"{100 * after['worst_group']:.1f} %",
                     delta=f"{100 * change:+.1f} pts" if change else None)
    groups_col.metric("Groups", f"{len(after['per_group'])} · {int(rows.sum())} photos")
    percent = {c: st.column_config.NumberColumn(format="%.1f %%") for c in ("before", "after")}
    with st.expander("Accuracy per group (groups.csv)"):
        st.dataframe(
            pd.DataFrame(group_rows(before, after)).assign(
                before=lambda d: 100 * d["before"], after=lambda d: 100 * d["after"], change=lambda d: 100 * d["change"]),
            hide_index=True, width="stretch",
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
        table, hide_index=True, width="stretch", height=min(36 * (len(rows) + 1) + 3, 320),
        column_config={"before": st.column_config.NumberColumn(format="%.1f %%"),
                       "after": st.column_config.NumberColumn(format="%.1f %%"),
                       "change": st.column_config.NumberColumn(format="%+.1f pts")},
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
            "Top-1 with the oracle", f"{100 * oracle['top1_after']:.1f} %",
            delta=f"{100 * (oracle['top1_after'] - oracle['top1_before']):+.1f} pts",
        )
        photos_col.metric("Photos intervened on", oracle["intervened_images"])


# -- saving and leaving the app ---------------------------------------------------------------------------
def save_section(ctx: Context, scale: torch.Tensor) -> None:
    """The edited head saved as a new run, which can then be opened, and downloaded as a model that runs
    without this app (TorchScript: ``torch.jit.load``)."""
    state = st.session_state
    st.markdown("##### Save the edited head")
    note = describe_scale(scale, ctx.class_names)
    name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    with name_col:
        name = kept(st.text_input, "New run name", f"iv_name.{ctx.key}", f"{ctx.name}-edited")
    with button_col:
        clicked = st.button("Save as a new run", icon=":material/save:", disabled=note == "no change", width="stretch")
    st.caption(f"Intervention: {note}" + (" · the prototypes' labels go with it" if ctx.run.labels else ""))
    if clicked:
        ws = workspace()
        try:
            path = save_run(ctx.run.with_scale(scale, note), ws.new_run_path(name))
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
            "Download the model (TorchScript)", data=exporter(state["iv_saved_path"], ctx),
            file_name=f"{safe_name(saved)}.pt", mime="application/octet-stream", icon=":material/download:",
            on_click="ignore", key=f"iv_download.{edit_key(Path(state['iv_saved_path']))}",
            help="The backbone and the edited prototype head in one file: torch.jit.load(\"model.pt\")(images) "
            "gives the logits, with no protoscope installed (class names, labels and preprocessing inside).",
        )


def exporter(path: str, ctx: Context):
    """The download's data, made when the button is clicked: the saved run exported on the run's model."""
    backbone = ctx.backbone

    def make() -> bytes:
        return exported_bytes(model_from_run(load_run(path, backbone), backbone))

    return make


# -- the shortcut demo -----------------------------------------------------------------------------------
def shortcut_demo_builder():
    """The shortcut benchmark's demo builder when this installation has one, else None (and no button):
    ``build_shortcut_demo(runs_root)`` builds the data and the run once (later calls only find them), publishes
    the run under ``runs_root/shared`` and returns its folder, or (its folder, the data folder to open)."""
    return getattr(shortcut_module(), "build_shortcut_demo", None)


def shortcut_demo_offer() -> None:
    """One click builds (or opens, when built already) the shortcut benchmark's data and run, published for
    everyone: a model that leans on the background, to repair here in under a minute."""
    build = shortcut_demo_builder()
    if build is None:
        return
    with st.expander("Demo: repair a model that looks at the background", icon=":material/rocket_launch:"):
        st.caption(
            "Generated photos whose background gives the class away in training but not in the held-out split; "
            "a small CNN learns the shortcut. Open it, switch off every background prototype and watch the "
            "worst-group accuracy. Built once per server and shared with everyone."
        )
        if st.button("Open the shortcut demo", icon=":material/play_arrow:", key="iv_shortcut_demo"):
            open_shortcut_demo(build)


def open_shortcut_demo(build) -> None:
    with st.status("Preparing the shortcut demo…", expanded=True) as status:
        started = time.perf_counter()
        try:
            with jobs.queued("shortcut demo"):
                built = build(workspace().runs_root)
        except (DataError, BackboneError, RunError, ValueError, OSError) as exc:
            status.update(label="The shortcut demo could not be built", state="error")
            st.error(workspace().redact(str(exc)), icon=":material/error:")
            return
        status.update(label=f"Shortcut demo ready in {time.perf_counter() - started:.0f} s", state="complete")
    run_path, data = built if isinstance(built, tuple) else (built, None)
    select_run_path(Path(run_path))
    if data:
        st.session_state["data_dir"] = str(data)
    st.rerun()


@st.fragment
def live(ctx: Context, photo: Photo, data: str) -> None:
    """Everything that follows the controls; redraws alone when they change."""
    labels = kept(
        st.multiselect, "Classes to edit", f"iv_classes.{photo.picked.key}", [photo.first], options=ctx.decomposed,
        format_func=lambda c: ctx.labels[c] + ("  (predicted)" if c == photo.predicted else ""),
    )
    scale = current_scale(ctx)
    left, right = st.columns([5, 6], gap="large")
    with left:
        st.markdown("##### Prototypes: on/off and scale")
        if labels:
            controls(ctx, photo, labels)
        else:
            st.info("Choose a decomposed class to edit its prototypes here, or use the table below.")
        st.button("Reset all", icon=":material/restart_alt:", on_click=reset_all, args=(ctx,))
    edited = ctx.head.logits(photo.pooled, photo.contributions, scale)[0]
    with right:
        st.markdown("##### This photo")
        photo_results(ctx, photo, edited, labels or [photo.first])
    st.divider()
    prototype_table_section(ctx, scale, data)
    summary = st.empty()
    st.divider()
    held_out_section(ctx, scale, labels, summary)
    st.divider()
    save_section(ctx, scale)


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Intervene")
st.caption(
    "Switch a prototype off (or scale it) and the class's logit loses that part's contribution: a test-time "
    "edit of the model that needs no retraining and no second pass through the backbone."
)
shortcut_demo_offer()
ctx = require_run()
picked = image_picker(ctx)
if picked is None:
    st.stop()
live(ctx, photo_numbers(ctx, picked), data_dir())
