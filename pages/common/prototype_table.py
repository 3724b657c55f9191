"""Every prototype of a run in one table (Intervene): tick prototypes of any classes and scale them together,
see each one's share of its class's logit and of the background, look at its top photos, and name it (the
names are saved with the run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
import torch

from pages.common import cache, figures, viewmodels
from pages.common.edit_views import (
    NAME,
    SELECT,
    merge_table_edits,
    prototype_caption,
    prototype_name_changes,
    prototype_names_after,
    prototype_table,
)
from pages.common.edits import carry_edits, edit_key, set_scales
from pages.common.run_context import Context, run_class_features
from pages.common.shortcut_demo import background_shares, keep_object_parts, switch_off_background
from pages.common.sidebar import select_run_path
from pages.common.state import kept, workspace
from protolib.backbones import BackboneError
from protolib.data import DataError
from protolib.data.features import extract_features
from protolib.evaluation.compare import contribution_shares
from protolib.evaluation.prototype_health import class_health
from protolib.explain import heatmap_overlay, upsample
from protolib.method.spatial import KEEP_SHARE
from protolib.palette import prototype_hex
from protolib.runs import RunError, save_run

SHARE_CLASSES = 64  # the table measures shares of the logit for runs of at most this many classes
TOP_PHOTOS, TOP_PROTOTYPES = 4, 6  # top photos per selected prototype, and how many prototypes show them


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
def logit_shares(key: str, _ctx: Context) -> tuple[np.ndarray, list[list[str]]] | None:
    """(C, k) each prototype's share of its class's logit (|mean contribution| over the class's training
    photos, from the feature cache), NaN where the photos are gone, and per prototype what
    ``prototype_health`` says of it on the same photos ("" when it is neither dead nor a duplicate); None for
    runs of many classes."""
    run = _ctx.run
    if len(run.classes) > SHARE_CLASSES:
        return None
    shares = np.full((len(run.classes), run.k), np.nan, dtype=np.float32)
    notes = [[""] * run.k for _ in run.classes]
    for c, entry in enumerate(run.manifest["classes"]):
        paths = [p for p in run.manifest["images"].get(entry["folder"], []) if Path(p).is_file()]
        try:
            features = extract_features(_ctx.backbone, paths) if paths else None
        except (DataError, BackboneError, OSError):
            features = None
        if features is not None and len(features.paths):
            mean = _ctx.head.contributions(features.pooled)[:, c, :].mean(dim=0)
            shares[c] = contribution_shares(mean).numpy()
            health = class_health(
                features.feats.reshape(-1, features.feats.shape[-1]),
                _ctx.head.refined_prototypes[c],
                _ctx.head.part_vectors[c],
                _ctx.head.presence_damping,
            )
            notes[c] = [health.note(i) for i in range(run.k)]
    return shares, notes


def prototype_table_section(ctx: Context, scale: torch.Tensor, data: str) -> None:
    """Every prototype of the run, in one table: tick prototypes of any classes and scale them together, and
    name them (the names are saved with the run)."""
    state, k = st.session_state, ctx.run.k
    st.markdown("##### Every prototype of the run")
    st.caption(
        "Tick prototypes of any classes in the first column and scale them together; type a name in **name** "
        "(“beak”, “water”) and save it with the run. The held-out accuracy below follows every change."
    )
    chosen, pending, grid = selected(ctx), state.get(pending_key(ctx), {}), ctx.run.prototype_name_grid()
    measured = logit_shares(ctx.key, ctx)
    shares, health = measured if measured is not None else (None, None)
    background = background_shares(ctx.key, data, ctx)
    rows = prototype_table(
        ctx.class_names,
        k,
        grid,
        scale,
        chosen,
        pending,
        shares=None if shares is None else torch.from_numpy(shares),
        health=health,
        background=None if background is None else torch.from_numpy(background),
        colours=[prototype_hex(i) for i in range(k)],
    )
    table = pd.DataFrame(rows).replace({np.nan: None})
    config = {
        SELECT: st.column_config.CheckboxColumn("select", width="small"),
        "colour": st.column_config.ImageColumn("colour", width="small"),
        NAME: st.column_config.TextColumn("name", max_chars=80, help="A short name: what this prototype looks at"),
        "share of the logit": st.column_config.ProgressColumn(
            min_value=0.0,
            max_value=1.0,
            format="percent",
            help="|mean contribution| over the class's training photos, as a share of all its prototypes'",
        ),
        "on the background": st.column_config.ProgressColumn(
            min_value=0.0,
            max_value=1.0,
            format="percent",
            help="Share of its positive heatmap on the background of masked photos of its class",
        ),
        "scale": st.column_config.TextColumn("scale", help="on, off, or the factor its contribution is scaled by"),
        "dead or duplicate": st.column_config.TextColumn(
            "dead or duplicate",
            help="Dead: below 2 % of its class's logit on the training photos. Duplicate: its part "
            "map correlates above 0.9 with an earlier prototype's",
        ),
    }
    key = editor_key(ctx)
    st.data_editor(
        table,
        key=key,
        on_change=table_edited,
        args=(ctx, key),
        hide_index=True,
        width="stretch",
        num_rows="fixed",
        disabled=[c for c in table.columns if c not in (SELECT, NAME)],
        column_config=config,
        height=min(36 * (len(rows) + 1) + 3, 460),
    )
    selection_controls(ctx, sorted(chosen), grid, background is not None, data)
    prototype_name_controls(ctx, grid, pending)


def selection_controls(ctx: Context, chosen: list[tuple[int, int]], grid, background: bool, data: str) -> None:
    names = [prototype_caption(ctx.class_names[c], i, grid[c][i]) for c, i in chosen]
    st.caption(
        f"**{len(chosen)} selected:** " + figures.md(", ".join(names))
        if chosen
        else "Tick prototypes in the first column to select them (any classes)."
    )
    edit = edit_key(ctx.run.path)
    to_col, _ = st.columns([2, 3])
    with to_col:
        value = kept(st.slider, "Scale selected to", f"iv_to.{edit}", 0.0, min_value=0.0, max_value=2.0, step=0.05)
    with st.container(horizontal=True, gap="small"):
        st.button("Apply to selected", on_click=set_scales, args=(ctx, chosen, value), disabled=not chosen, icon=":material/tune:")
        st.button("Switch selected off", on_click=set_scales, args=(ctx, chosen, 0.0), disabled=not chosen, icon=":material/block:")
        st.button("Reset selected", on_click=set_scales, args=(ctx, chosen, 1.0), disabled=not chosen, icon=":material/undo:")
        st.button("Clear selection", on_click=clear_selection, args=(ctx,), disabled=not chosen)
        if background:
            st.button(
                "Switch off every background prototype",
                on_click=switch_off_background,
                args=(ctx, data),
                icon=":material/landscape:",
                type="primary",
                help="Every prototype whose positive heatmap lies mostly on the background of the masked photos of its "
                "class (the shortcut benchmark's mask rule)",
            )
            st.button(
                "Keep only where the object parts are",
                on_click=keep_object_parts,
                args=(ctx, data),
                icon=":material/center_focus_strong:",
                help="Tick “Keep only where these parts are” for every other prototype (the object parts): each photo "
                f"pools only the {100 * KEEP_SHARE:g} % of its cells where they are most present, an edit of the pooling, "
                "not of a weight",
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
        st.markdown(figures.chip(i, figures.md(prototype_caption(ctx.class_names[c], i, grid[c][i]))), unsafe_allow_html=True)
        for col, j, h, img in zip(st.columns(TOP_PHOTOS), order, heat, images):
            col.image(
                heatmap_overlay(upsample(h, img.shape[:2]), img),
                caption=f"contribution {float(contributions[j, i]):+.2f}",
                width="stretch",
            )


def prototype_name_controls(ctx: Context, grid, pending: dict) -> None:
    """Save the names typed in the table (a new version of the run; a published run is copied first)."""
    changes = prototype_name_changes(grid, pending)
    if st.session_state.get("iv_label_note"):
        st.success(st.session_state.pop("iv_label_note"), icon=":material/sell:")
    if not changes:
        return
    owned = workspace().owns(ctx.run.path)
    where = "with this run" if owned else "in your own copy of this published run"
    if st.button(f"Save {len(changes)} name{'s' if len(changes) > 1 else ''} {where}", type="primary", icon=":material/sell:"):
        try:
            path = save_prototype_names(ctx, prototype_names_after(grid, ctx.decomposed, pending), owned)
        except (RunError, ValueError, OSError) as exc:
            st.error(workspace().redact(f"The names could not be saved: {exc}"))
            return
        st.session_state["iv_label_note"] = f"Names saved with run “{path.name}”."
        st.rerun(scope="app")


def save_prototype_names(ctx: Context, prototype_names: dict, owned: bool) -> Path:
    """Write the run again with ``prototype_names`` (atomically: a reader sees the old version or the new one). A
    published run is read-only: the labelled run becomes the session's own copy, which it then shows."""
    run = ctx.run.with_prototype_names(prototype_names)
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
