"""Intervene's edit in space, kept in the session: per prototype, whether the cells where its part is present are
left out of the pooling, and whether the photo pools only where it (with the other ticked parts) is most present
(``protolib.method.spatial``). A change of the model's computation, not of its head: unlike a switch or a scale it
needs the photos' per-cell features, which the page already holds.
"""

from __future__ import annotations

import streamlit as st
import torch

from pages.common.edits import edit_key
from pages.common.run_context import Context
from pages.common.state import kept
from protolib.method.spatial import (
    KEEP_SHARE,
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
KEEP_TITLE = "Keep only where these parts are"
KEEP_HELP = (
    f"An edit of the model's computation, not of its head: each photo pools only the share of its cells ({100 * KEEP_SHARE:g} % "
    "unless the run was saved with another) where the parts ticked here are most present together; every other cell is left "
    "out, for every class's logit. On the shortcut benchmark, keeping only where a class's object parts are repairs a "
    "model that looks at the background (README)."
)


def space_key(ctx: Context, label: int, i: int, rule: str = "space") -> str:
    """The session key of "leave out where prototype ``i`` of class ``label`` is" (``rule`` "space") or of "keep
    only where it is" ("keep"); ``iv.`` keys, so that ``carry_edits`` carries them to a labelled copy of the run."""
    return f"iv.{edit_key(ctx.run.path)}.{label}.{i}.{rule}"


def saved(ctx: Context) -> SpatialEdit | None:
    """The edit in space the run was saved with: the page's toggles start from it."""
    return ctx.run.spatial_edit


def space_toggle(ctx: Context, label: int, i: int) -> None:
    edit = saved(ctx)
    leave_col, keep_col = st.columns(2)
    with leave_col:
        leave = bool(edit and (label, i) in edit.leave_out)
        kept(st.checkbox, f"{TITLE} (P{i + 1})", space_key(ctx, label, i), leave, help=HELP)
    with keep_col:
        keep = bool(edit and (label, i) in edit.keep_where)
        kept(st.checkbox, f"{KEEP_TITLE} (P{i + 1})", space_key(ctx, label, i, "keep"), keep, help=KEEP_HELP)


def current_spatial(ctx: Context) -> SpatialEdit | None:
    """The session's edit in space on this run (None: the original pooling); its presence level and kept share are
    those the run was saved with (the defaults otherwise)."""
    edit = saved(ctx)

    def ticked(rule: str, saved_pairs: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        return tuple(
            (label, i)
            for label in ctx.decomposed
            for i in range(ctx.run.k)
            if st.session_state.get(space_key(ctx, label, i, rule), (label, i) in saved_pairs)
        )

    spatial = SpatialEdit(
        ticked("space", edit.leave_out if edit else ()),
        edit.level if edit else LEVEL,
        ticked("keep", edit.keep_where if edit else ()),
        edit.keep_share if edit else KEEP_SHARE,
    )
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
