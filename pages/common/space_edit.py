"""Intervene's edit in space, kept in the session: per prototype, whether the cells where its part is present are
left out of the pooling (``protolib.method.spatial``). A change of the model's computation, not of its head:
unlike a switch or a scale it needs the photos' per-cell features, which the page already holds.
"""

from __future__ import annotations

import streamlit as st
import torch

from pages.common.edits import edit_key
from pages.common.run_context import Context
from pages.common.state import kept
from protolib.method.spatial import (
    LEVEL,
    EditedPooling,
    SpatialEdit,
    cells_left_out,
    edited_pooling,
    split_pooling,
)

TITLE = "Leave out where this part is"
HELP = (
    f"An edit of the model's computation, not of its head: the cells of the photo where this prototype's part "
    f"is present (its part map at {LEVEL:g} or more, as the part map draws it) are left out of the average "
    f"pooling, for every class's logit. If every cell would be left out, the photo keeps them all."
)


def space_key(ctx: Context, label: int, i: int) -> str:
    """The session key of "leave out where prototype ``i`` of class ``label`` is" (an ``iv.`` key, so that
    ``carry_edits`` carries it to a labelled copy of the run)."""
    return f"iv.{edit_key(ctx.run.path)}.{label}.{i}.space"


def saved(ctx: Context) -> SpatialEdit | None:
    """The edit in space the run was saved with: the page's toggles start from it."""
    return ctx.run.spatial_edit


def space_toggle(ctx: Context, label: int, i: int) -> None:
    edit = saved(ctx)
    kept(st.checkbox, f"{TITLE} (P{i + 1})", space_key(ctx, label, i), bool(edit and (label, i) in edit.leave_out), help=HELP)


def current_spatial(ctx: Context) -> SpatialEdit | None:
    """The session's edit in space on this run (None: the original pooling)."""
    edit = saved(ctx)
    chosen = [
        (label, i)
        for label in ctx.decomposed
        for i in range(ctx.run.k)
        if st.session_state.get(space_key(ctx, label, i), bool(edit and (label, i) in edit.leave_out))
    ]
    if not edit:
        return SpatialEdit(tuple(chosen)) if chosen else None
    # a saved keep-edit (``keep_where``, made by the library) stays as it was: the page toggles leave-out parts
    spatial = SpatialEdit(tuple(chosen), edit.level, edit.keep_where, edit.keep_share)
    return spatial or None


def photo_pooling(ctx: Context, feats: torch.Tensor, edit: SpatialEdit | None) -> tuple[EditedPooling, torch.Tensor]:
    """(the edited pooling of one photo's features (H, W, D), its left-out cells (H, W) bool)."""
    return edited_pooling(ctx.head, feats.unsqueeze(0), edit), cells_left_out(ctx.head, feats[None], edit)[0]


def split_edited_pooling(key: str, ctx: Context, matrices, n_photos: int, edit: SpatialEdit) -> torch.Tensor:
    """The held-out split's pooled features under the edit, computed once per split and edit in this session."""
    memo = st.session_state.setdefault("iv_space_split", {})
    name = (key, edit)
    if name not in memo:
        memo.clear()  # one split and edit at a time: the pooled features of a split are N x D floats
        memo[name] = split_pooling(ctx.head, matrices, n_photos, edit).pooled
    return memo[name]
